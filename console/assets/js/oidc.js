// Signing in through the deployment's OpenID provider: the authorization code flow with
// PKCE (S256), the page acting as a public client. While the browser is at the provider,
// the verifier and the state wait in sessionStorage (this tab only); the code that comes
// back is exchanged at the provider's token endpoint for an access token, which the
// console then sends as any bearer token. Nothing of it goes through the server.

const PENDING = "aiq.oidc.pending";

// How this deployment signs people in (`/console/sign-in.json`); null: no provider.
export async function signInConfig() {
  try {
    const r = await fetch("/console/sign-in.json", { cache: "no-cache" });
    return r.ok ? await r.json() : null;
  } catch {
    return null;
  }
}

function base64url(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function random(bytes) {
  const a = new Uint8Array(bytes);
  crypto.getRandomValues(a);
  return base64url(a);
}

// The console's own address: what the provider sends the browser back to.
function redirectUri() {
  return `${location.origin}/`;
}

async function discover(issuer) {
  const r = await fetch(`${issuer.replace(/\/$/, "")}/.well-known/openid-configuration`);
  if (!r.ok) throw new Error(`The sign-in provider's discovery document answered ${r.status}.`);
  return r.json();
}

// Sends the browser to the provider; `returnTo` is the view to open once signed in.
export async function begin(cfg, returnTo) {
  const meta = await discover(cfg.issuer);
  const verifier = random(32);
  const state = random(16);
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state, tokenEndpoint: meta.token_endpoint, returnTo }));
  const q = new URLSearchParams({
    response_type: "code",
    client_id: cfg.client_id,
    redirect_uri: redirectUri(),
    scope: cfg.scope,
    state,
    code_challenge: base64url(new Uint8Array(digest)),
    code_challenge_method: "S256",
  });
  if (cfg.resource) q.set("resource", cfg.resource);
  location.assign(`${meta.authorization_endpoint}?${q}`);
}

// Whether the provider has just sent the browser back here.
export function returning() {
  const q = new URLSearchParams(location.search);
  return q.has("code") || q.has("error");
}

// Finishes the sign-in the provider sent the browser back from: the access token and the
// view to open. The code leaves the address bar either way.
export async function finish(cfg) {
  const q = new URLSearchParams(location.search);
  let pending = null;
  try {
    pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  } catch {
    pending = null;
  }
  sessionStorage.removeItem(PENDING);
  history.replaceState(null, "", `${location.pathname}${(pending && pending.returnTo) || "#/signin"}`);
  if (q.has("error")) throw new Error(`The sign-in provider said: ${q.get("error_description") || q.get("error")}`);
  if (!cfg || !pending || q.get("state") !== pending.state) throw new Error("This sign-in was not started from this tab; start it again.");
  const body = new URLSearchParams({
    grant_type: "authorization_code",
    code: q.get("code"),
    redirect_uri: redirectUri(),
    client_id: cfg.client_id,
    code_verifier: pending.verifier,
  });
  if (cfg.resource) body.set("resource", cfg.resource);
  const r = await fetch(pending.tokenEndpoint, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body,
  });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok || !answer.access_token) throw new Error(`The sign-in provider gave no token: ${answer.error_description || answer.error || r.status}`);
  return { token: answer.access_token, returnTo: pending.returnTo || "#/runs" };
}
