// Who the dashboard acts as. One credential, kept in sessionStorage (this tab
// only, gone when it closes, never in localStorage), with the principal the
// node's /whoami gave for it. A Supabase Auth session is renewed before its
// access token expires; a pasted token that cannot be renewed ends when it does.
//
// Events: "change" {principal, notice} when someone signs in or out (notice:
// why the session ended, for people), "token" when the credential was renewed.

import { ApiError, api, sentence } from "./api.js";
import { passwordGrant, refreshGrant } from "./supabase.js";

const STORAGE_KEY = "orderflow.session";
const MAX_MARGIN_S = 60; // renew this long before expiry (a quarter of a short lifetime)...
const RETRY_S = 10; // ...and retry this often while Supabase Auth cannot be reached
const MAX_TIMER_MS = 2 ** 31 - 1;

export class Session extends EventTarget {
  /** authConfig: a promise of /info's `auth` ({supabase_url, anon_key} or null). */
  constructor({ authConfig, storage = window.sessionStorage }) {
    super();
    this.authConfig = authConfig.catch(() => null);
    this.storage = storage;
    this.credential = null; // {kind: "bearer"|"supabase", token, refresh_token, expires_at, expires_in}
    this.principal = null; // /whoami's answer for it
    this.timer = null;
    this.renewing = null;
    this.generation = 0; // one per sign-in and sign-out: late answers for an older one are dropped
    this.load();
  }

  get signedIn() {
    return this.principal !== null;
  }

  /** Paste an API key (or an access token): signed in if the node knows it. */
  async signInWithToken(text) {
    const token = text.trim();
    if (!token) throw new ApiError(0, "UNAUTHENTICATED", "paste an API key first");
    const principal = await whoami(token);
    this.start({ kind: "bearer", token, expires_at: principal.expires_at ?? null }, principal);
  }

  async signInWithPassword(email, password) {
    const config = await this.authConfig;
    if (!config) throw new ApiError(0, "UNAUTHENTICATED", "this node has no Supabase Auth");
    const grant = await passwordGrant(config, email.trim(), password);
    const principal = await whoami(grant.access_token);
    this.start(fromGrant(grant), principal);
  }

  /** notice: why, when it was not the user's choice; shown to them. */
  signOut(notice = null) {
    const was = this.credential;
    this.generation += 1;
    clearTimeout(this.timer);
    this.credential = null;
    this.principal = null;
    this.storage.removeItem(STORAGE_KEY);
    if (was) this.emit("change", { principal: null, notice });
  }

  /** The credential to send now, renewed first if it is about to expire; null when signed out.
   *  renew: the server said it expired, so renew it whatever our clock says. */
  async bearer({ renew = false } = {}) {
    const c = this.credential;
    if (!c) return null;
    if (c.kind === "supabase" && (renew || expiresWithin(c, margin(c)))) await this.renew();
    else if (c.kind === "bearer" && c.expires_at && (renew || expiresWithin(c, 0))) this.expired();
    return this.credential?.token ?? null;
  }

  /** Ask the node again who the credential is: after a reload (the key may have been
   *  revoked meanwhile) and after a renewal (the user's role may have changed). */
  async verify() {
    const generation = this.generation;
    if (!this.credential) return;
    try {
      const principal = await whoami(await this.bearer());
      if (this.generation !== generation) return;
      const changed = !samePowers(principal, this.principal);
      this.principal = principal;
      this.save();
      if (changed) this.emit("change", { principal, notice: null });
    } catch (error) {
      // Unreachable is not refused: keep the session and let the next request decide.
      if (error instanceof ApiError && error.status === 401 && this.generation === generation) {
        this.signOut(`You were signed out: ${sentence(error.message)}`);
      }
    }
  }

  /** A 401 for a credential we sent, from the API or the live socket; bearer: which one. */
  refused(error, bearer) {
    if (this.credential && this.credential.token === bearer) {
      this.signOut(`You were signed out: ${sentence(error.message)}`);
    }
  }

  renew() {
    this.renewing ??= this.refresh().finally(() => {
      this.renewing = null;
    });
    return this.renewing;
  }

  async refresh() {
    const c = this.credential;
    const generation = this.generation;
    const config = await this.authConfig;
    if (!config || c?.kind !== "supabase") return;
    try {
      const grant = await refreshGrant(config, c.refresh_token);
      if (this.generation !== generation) return; // signed out meanwhile
      this.credential = fromGrant(grant);
      this.save();
      this.schedule();
      this.emit("token", {});
      this.verify();
    } catch (error) {
      if (this.generation !== generation) return;
      const transient = error.network || error.status === 429 || error.status >= 500;
      if (transient && !expiresWithin(c, 0)) this.schedule(RETRY_S);
      else this.signOut(`Your session ended: ${sentence(error.message)} Sign in again.`);
    }
  }

  start(credential, principal) {
    this.generation += 1;
    this.credential = credential;
    this.principal = principal;
    this.save();
    this.schedule();
    this.emit("change", { principal, notice: null });
  }

  /** Renew a Supabase session ahead of expiry; end a pasted token when it expires. */
  schedule(inSeconds = null) {
    clearTimeout(this.timer);
    const c = this.credential;
    if (!c?.expires_at) return;
    let delay = inSeconds;
    if (delay === null) {
      delay = Math.max(0, c.expires_at - Date.now() / 1000 - margin(c));
    }
    const run = c.kind === "supabase" ? () => this.renew() : () => this.expired();
    this.timer = setTimeout(run, Math.min(delay * 1000, MAX_TIMER_MS));
  }

  expired() {
    if (this.credential) this.signOut("Your token expired. Sign in again to go on.");
  }

  load() {
    let kept = null;
    try {
      kept = JSON.parse(this.storage.getItem(STORAGE_KEY) ?? "null");
    } catch {
      kept = null;
    }
    if (typeof kept?.credential?.token !== "string" || !kept.principal) {
      this.storage.removeItem(STORAGE_KEY);
      return;
    }
    this.credential = kept.credential;
    this.principal = kept.principal;
    this.schedule();
  }

  save() {
    const kept = { credential: this.credential, principal: this.principal };
    this.storage.setItem(STORAGE_KEY, JSON.stringify(kept));
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** The principal the node takes a credential for; a node that ignores it is a refusal too. */
async function whoami(token) {
  const principal = await api.whoami(token);
  if (principal?.kind === "anonymous" || !principal) {
    throw new ApiError(401, "UNAUTHENTICATED", "this node did not accept the credential");
  }
  return principal;
}

function samePowers(a, b) {
  const powers = (p) => JSON.stringify([p?.kind, p?.id, p?.role, p?.name, p?.scopes]);
  return powers(a) === powers(b);
}

function fromGrant(grant) {
  return {
    kind: "supabase",
    token: grant.access_token,
    refresh_token: grant.refresh_token,
    expires_at: grant.expires_at,
    expires_in: grant.expires_in,
  };
}

/** How long before expiry a Supabase session is renewed; a timer throttled in a background
 *  tab may fire late, so a request made after that renews first. */
function margin(credential) {
  if (credential.kind !== "supabase") return 0;
  return Math.min(MAX_MARGIN_S, (credential.expires_in ?? 0) / 4);
}

function expiresWithin(credential, seconds) {
  return Boolean(credential.expires_at) && credential.expires_at - Date.now() / 1000 <= seconds;
}
