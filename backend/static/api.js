// The REST API. Every failure becomes an ApiError with the server's
// {code, message, details}, or code NETWORK_ERROR when no answer came back.
// Requests carry the session's credential as `Authorization: Bearer`; a 401
// for a credential sent is reported to the session, which signs out.

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details ?? {};
  }

  /** True when the request may not have reached the server: safe to retry as is. */
  get network() {
    return this.code === "NETWORK_ERROR";
  }
}

const TIMEOUT_MS = 15000;

let auth = { bearer: async () => null, refused: () => {} };

/**
 * How requests are signed: `bearer()` resolves to the credential to send (or
 * null), `refused(error, bearer)` hears of every 401 answered to a credential it gave.
 */
export function useAuth(hooks) {
  auth = hooks;
}

/** `token`: send this credential (or none, with null) instead of the session's;
 *  `text`: the answer is text (a receipt), not JSON. */
export async function request(method, path, { body, headers = {}, token, text = false } = {}) {
  const bearer = token === undefined ? await auth.bearer() : token;
  const accept = text ? "text/plain" : "application/json";
  const init = { method, headers: { Accept: accept, ...headers } };
  if (bearer) init.headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  init.signal = AbortSignal.timeout(TIMEOUT_MS);
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    const why =
      error?.name === "TimeoutError"
        ? "the server did not answer in time"
        : "the server cannot be reached";
    throw new ApiError(0, "NETWORK_ERROR", why);
  }
  if (text && response.ok) return response.text();
  const data = await response.json().catch(() => null);
  if (response.ok) return data;
  const error =
    data && typeof data.code === "string"
      ? new ApiError(response.status, data.code, data.message ?? data.code, data.details)
      : new ApiError(
          response.status,
          `HTTP_${response.status}`,
          response.statusText || "request failed",
        );
  if (response.status === 401 && bearer && token === undefined) auth.refused(error, bearer);
  throw error;
}

export const api = {
  // Open to anyone; sent without credentials, since the session needs it to renew them.
  info: () => request("GET", "/info", { token: null }),
  whoami: (token) => request("GET", "/whoami", { token }),
  events: (limit = 30) => request("GET", `/events?limit=${limit}`),
  orders: (limit = 10) => request("GET", `/orders?limit=${limit}`),
  placeOrder: (body, idempotencyKey) =>
    request("POST", "/orders", { body, headers: { "Idempotency-Key": idempotencyKey } }),
  confirmOrder: (id) => request("POST", `/orders/${encodeURIComponent(id)}/confirm`),
  cancelOrder: (id) => request("POST", `/orders/${encodeURIComponent(id)}/cancel`),
  timeline: (id) => request("GET", `/orders/${encodeURIComponent(id)}/events`),
  receipt: (id) =>
    request("GET", `/orders/${encodeURIComponent(id)}/receipt?format=text`, { text: true }),
  lifecycle: () => request("GET", "/admin/lifecycle"),
  deadLetters: (limit = 50) => request("GET", `/admin/dead-letters?limit=${limit}`),
  replayDeadLetter: (id) =>
    request("POST", `/admin/dead-letters/${encodeURIComponent(id)}/replay`),
  replayAllDeadLetters: () => request("POST", "/admin/dead-letters/replay"),
  createProduct: (product) => request("POST", "/products", { body: product }),
  adjustStock: (sku, delta, reason) =>
    request("POST", `/products/${encodeURIComponent(sku)}/adjustments`, {
      body: { delta, reason },
    }),
  deleteProduct: (sku) => request("DELETE", `/products/${encodeURIComponent(sku)}`),
};

/** A sentence or two for people, built from the error's code and details. */
export function describe(error) {
  if (!(error instanceof ApiError))
    return { title: "Something went wrong", lines: [String(error)] };
  const d = error.details ?? {};
  switch (error.code) {
    case "NETWORK_ERROR":
      return { title: "No answer from the server", lines: [sentence(error.message)] };
    case "UNAUTHENTICATED":
      return { title: "Not signed in", lines: [sentence(error.message)] };
    case "FORBIDDEN":
      return { title: "Not allowed", lines: [sentence(error.message)] };
    case "OUT_OF_STOCK":
      if (Array.isArray(d.lines)) {
        return {
          title: "Not enough stock",
          lines: d.lines.map((l) => `${l.sku}: ${l.requested} requested, ${l.available} available`),
        };
      }
      return { title: "Not enough stock", lines: [capitalize(error.message)] };
    case "VALIDATION_ERROR":
    case "INVALID_JSON":
      if (Array.isArray(d.errors)) {
        return {
          title: "Please check the form",
          lines: d.errors.map((e) => `${fieldName(e.location)}: ${e.problem}`),
        };
      }
      break;
    case "UNKNOWN_SKU":
      return { title: "Unknown product", lines: [capitalize(error.message)] };
    case "HAS_HOLDS":
      return {
        title: "Cannot delete while orders hold stock",
        lines: [`${capitalize(error.message)}. Confirm or cancel those orders first.`],
      };
    default:
      break;
  }
  return { title: humanCode(error.code), lines: [capitalize(error.message)] };
}

function fieldName(location) {
  const parts = (location ?? []).filter((p) => p !== "body");
  return parts.length ? parts.join(" \u203a ") : "request";
}

function humanCode(code) {
  const text = String(code).toLowerCase().replaceAll("_", " ");
  return capitalize(text);
}

/** "the key is revoked" -> "The key is revoked." */
export function sentence(text) {
  const s = capitalize(text).trim();
  return !s || /[.!?]$/.test(s) ? s : `${s}.`;
}

function capitalize(text) {
  const s = String(text ?? "");
  return s ? s[0].toUpperCase() + s.slice(1) : s;
}
