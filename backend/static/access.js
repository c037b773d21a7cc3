// What the caller may do, from /whoami's role and scopes, so that the page
// offers only what the node's route policy (backend/auth/policy.py) allows:
// customers order, read and cancel their own orders; staff, admins and API
// keys do what their scopes say; anonymous callers read the catalog.

const NOBODY = {
  signedIn: false,
  customer: false,
  order: false,
  orders: false,
  cancel: false,
  confirm: false,
  catalog: false,
  ledger: false,
  events: false,
};

export function access(principal) {
  if (!principal) return NOBODY;
  const customer = principal.role === "customer";
  const scopes = new Set(customer ? [] : (principal.scopes ?? []));
  return {
    signedIn: true,
    customer,
    order: customer || scopes.has("orders:write"),
    orders: customer || scopes.has("orders:read"),
    cancel: customer || scopes.has("orders:manage"),
    confirm: scopes.has("orders:manage"),
    catalog: scopes.has("catalog:write"),
    ledger: scopes.has("ledger:read"),
    events: scopes.has("events:manage"),
  };
}

/** Why a signed-in caller without `scope` cannot do something, for people. */
export function lacking(principal, scope) {
  if (!principal) return "Sign in first.";
  if (principal.role === "customer") return "Customers cannot do this.";
  return principal.kind === "key"
    ? `This API key lacks the ${scope} scope.`
    : `Your role (${principal.role}) lacks the ${scope} scope.`;
}

/** "Admin", "API key": how the header names a role. */
export function roleLabel(role) {
  return { key: "API key" }[role] ?? String(role).replace(/^./, (c) => c.toUpperCase());
}
