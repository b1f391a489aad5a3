// The management API, with the bearer token. The page is served without a token; when the API answers
// 401 we ask the user for one (a small form), keep it in sessionStorage and send it on every request.

// Relative to this file (<prefix>/dashboard/js/api.js), never "/api/": a host app may mount patchbay under a
// prefix (patchbay.mount(app, hub, prefix="/hub")), and then the API is <prefix>/api/.
export const API_BASE = new URL("../../api/", import.meta.url);
const TOKEN_KEY = "patchbay.token";

let askToken = null; // set by the app: async (reason) => token
let pending = null; // one prompt at a time, shared by every request that got a 401
let memoryToken = ""; // when sessionStorage is unavailable

export function setTokenPrompt(fn) {
  askToken = fn;
}

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage disabled: the token lives as long as this page */
  }
  memoryToken = token || "";
}

function currentToken() {
  return getToken() || memoryToken;
}

async function authenticate(rejected) {
  if (!askToken) throw new ApiError(401, "this patchbay needs a bearer token");
  if (!pending) {
    pending = askToken(rejected ? "rejected" : "required").finally(() => {
      pending = null;
    });
  }
  setToken(await pending);
}

export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/**
 * fetch() against /api/<path>; JSON bodies; the token on every request; on 401 ask for a token and retry.
 * Returns the Response (any status but 401).
 */
export async function apiFetch(path, { method = "GET", body, headers = {}, signal } = {}) {
  for (;;) {
    const sent = currentToken();
    const init = { method, headers: { Accept: "application/json", ...headers }, signal, cache: "no-store" };
    if (sent) init.headers.Authorization = `Bearer ${sent}`;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(new URL(path, API_BASE), init);
    if (res.status !== 401) return res;
    await res.body?.cancel();
    if (currentToken() !== sent) continue; // someone else already got a new token meanwhile
    await authenticate(Boolean(sent));
  }
}

/** The error message of an API answer: `detail` (a string, or FastAPI's list of validation errors). */
export function errorMessage(status, body) {
  const detail = body && typeof body === "object" ? body.detail : null;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((d) => {
        const loc = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
        return loc ? `${loc}: ${d.msg}` : String(d.msg);
      })
      .join("; ");
  }
  return `HTTP ${status}`;
}

async function readJson(res) {
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { detail: text.slice(0, 500) };
  }
}

/** A JSON request: the parsed body, or an ApiError with the server's message. */
export async function api(path, options = {}) {
  const res = await apiFetch(path, options);
  const body = await readJson(res);
  if (!res.ok) throw new ApiError(res.status, errorMessage(res.status, body), body);
  return body;
}

/** Like api() but never throws for an HTTP error: {ok, status, body}. */
export async function apiResult(path, options = {}) {
  const res = await apiFetch(path, options);
  return { ok: res.ok, status: res.status, body: await readJson(res) };
}
