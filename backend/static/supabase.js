// Supabase Auth's token endpoint, spoken with plain fetch: the password grant
// signs a user in, the refresh-token grant renews the session. Both are
// `POST <project>/auth/v1/token?grant_type=...` with the project's public anon
// key as `apikey`, and answer {access_token, refresh_token, expires_in,
// expires_at, user}. Failures are ApiErrors, as the node's are.

import { ApiError } from "./api.js";

const TIMEOUT_MS = 15000;

/** config: /info's `auth`, {supabase_url, anon_key}. */
export function passwordGrant(config, email, password) {
  return grant(config, "password", { email, password });
}

export function refreshGrant(config, refreshToken) {
  return grant(config, "refresh_token", { refresh_token: refreshToken });
}

async function grant(config, type, body) {
  const url = `${config.supabase_url.replace(/\/+$/, "")}/auth/v1/token?grant_type=${type}`;
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: {
        apikey: config.anon_key,
        "Content-Type": "application/json",
        Accept: "application/json",
      },
      body: JSON.stringify(body),
      credentials: "omit",
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch {
    throw new ApiError(0, "NETWORK_ERROR", "Supabase Auth cannot be reached");
  }
  const data = await response.json().catch(() => null);
  if (response.ok && typeof data?.access_token === "string") return session(data);
  throw refusal(response, data);
}

function session(data) {
  const now = Math.floor(Date.now() / 1000);
  const lifetime = Number(data.expires_in) || 3600;
  return {
    access_token: data.access_token,
    refresh_token: data.refresh_token,
    expires_in: lifetime,
    // expires_at is in Supabase's answer; computing it from expires_in covers its absence.
    expires_at: Number(data.expires_at) || now + lifetime,
    user: data.user ?? null,
  };
}

/** Supabase Auth's error bodies: {code, error_code, msg} now, {error, error_description} before. */
function refusal(response, data) {
  const code = data?.error_code ?? data?.error ?? `HTTP_${response.status}`;
  const message =
    data?.msg ?? data?.error_description ?? data?.message ?? (response.statusText || "refused");
  return new ApiError(response.status, String(code).toUpperCase(), String(message));
}
