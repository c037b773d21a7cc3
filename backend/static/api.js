// The REST API. Every failure becomes an ApiError with the server's
// {code, message, details}, or code NETWORK_ERROR when no answer came back.

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

export async function request(method, path, { body, headers = {} } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
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
  const data = await response.json().catch(() => null);
  if (response.ok) return data;
  if (data && typeof data.code === "string") {
    throw new ApiError(response.status, data.code, data.message ?? data.code, data.details);
  }
  throw new ApiError(
    response.status,
    `HTTP_${response.status}`,
    response.statusText || "request failed",
  );
}

export const api = {
  info: () => request("GET", "/info"),
  events: (limit = 30) => request("GET", `/events?limit=${limit}`),
  placeOrder: (body, idempotencyKey) =>
    request("POST", "/orders", { body, headers: { "Idempotency-Key": idempotencyKey } }),
  confirmOrder: (id) => request("POST", `/orders/${encodeURIComponent(id)}/confirm`),
  cancelOrder: (id) => request("POST", `/orders/${encodeURIComponent(id)}/cancel`),
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
      return { title: "No answer from the server", lines: [`${capitalize(error.message)}.`] };
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

function capitalize(text) {
  const s = String(text ?? "");
  return s ? s[0].toUpperCase() + s.slice(1) : s;
}
