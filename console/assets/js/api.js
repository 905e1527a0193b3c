// Calls the API with the signed-in credential. The credential lives in sessionStorage:
// it goes with the tab, and the page's policy lets no other script run beside it.

const KEY = "aiq.credential";

export function credential() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || "null");
  } catch {
    return null;
  }
}

export function signIn(kind, value) {
  sessionStorage.setItem(KEY, JSON.stringify({ kind, value }));
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, problem) {
    const detail = problem && typeof problem === "object" ? problem.detail || problem.title : problem;
    super(detail ? `${status}: ${detail}` : `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

// One call: JSON in, JSON out; a problem document becomes an ApiError.
export async function api(method, path, body) {
  return send(method, path, body === undefined ? undefined : JSON.stringify(body), "application/json");
}

// One call with a body of text as it is (a YAML or JSON document).
export async function apiText(method, path, text, contentType) {
  return send(method, path, text, contentType);
}

async function send(method, path, body, contentType) {
  const c = credential();
  const headers = { accept: "application/json" };
  if (c && c.kind === "key") headers["x-api-key"] = c.value;
  if (c && c.kind === "token") headers.authorization = `Bearer ${c.value}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers["content-type"] = contentType;
    init.body = body;
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (res.status === 401 && c) {
    // The credential no longer works (a token expired, a key was revoked): forget it,
    // and let the router ask for a new one, saying why.
    signOut();
    window.dispatchEvent(new CustomEvent("aiq:signed-out", { detail: new ApiError(res.status, data).message }));
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

// The query string of an object, leaving out empty values.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}
