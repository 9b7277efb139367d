// The console's only way to the daemon: GET requests to the same JSON API the CLI uses, with
// the bearer token the login form stored in sessionStorage (kept per tab, gone when it closes).

const TOKEN_KEY = "agentd.console.token";
/** Any request that takes longer is abandoned (the daemon's own limit is 30 s by default). */
const REQUEST_TIMEOUT_MS = 20000;
/** A download is abandoned after this long (files are read whole into memory: see exports.js). */
const DOWNLOAD_TIMEOUT_MS = 600000;

/** The API answered 401: no token, or one the daemon does not know. */
export class AuthRequired extends Error {}

/** Any other error answer, with the daemon's stable `code`. */
export class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Where the token lives when sessionStorage is refused (storage off): until the page reloads. */
let memoryToken = "";

export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || memoryToken;
  } catch {
    return memoryToken;
  }
}

export function setToken(value) {
  memoryToken = value || "";
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage refused: `memoryToken` holds it until the page reloads.
  }
}

/**
 * GET `path` (e.g. `/v1/jobs`) with `query` parameters (empty ones left out); resolves to the
 * parsed JSON body, or rejects with `AuthRequired` or `ApiFailure`.
 */
export async function get(path, query) {
  const response = await request(path, query, "application/json");
  return response.json();
}

/**
 * GET `path` as a Blob (a file of an export), with the token: what a plain link cannot send.
 * Rejects as `get` does.
 */
export async function getBlob(path) {
  const response = await request(path, {}, "*/*", DOWNLOAD_TIMEOUT_MS);
  return response.blob();
}

async function request(path, query, accept, timeoutMs) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== null && value !== undefined && value !== "") params.set(key, String(value));
  }
  const search = params.toString();
  const headers = { Accept: accept };
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs || REQUEST_TIMEOUT_MS);
  let response;
  try {
    response = await fetch(`${path}${search ? `?${search}` : ""}`, {
      headers,
      signal: abort.signal,
      cache: "no-store",
      credentials: "omit",
    });
  } catch (error) {
    throw new ApiFailure(0, "unreachable", `cannot reach the daemon (${error.name === "AbortError" ? "timed out" : error.message})`);
  } finally {
    clearTimeout(timer);
  }
  if (response.status === 401) {
    throw new AuthRequired(await errorMessage(response, "a token is required"));
  }
  if (!response.ok) {
    const body = await errorBody(response);
    throw new ApiFailure(response.status, body.code || String(response.status), body.message || response.statusText);
  }
  return response;
}

/** The path of an API route with its segments encoded: `api("tasks", id, "rollouts")`. */
export function api(...segments) {
  return `/v1/${segments.map((segment) => encodeURIComponent(String(segment))).join("/")}`;
}

async function errorBody(response) {
  try {
    const body = await response.json();
    return body && typeof body === "object" ? body : {};
  } catch {
    return {};
  }
}

async function errorMessage(response, fallback) {
  const body = await errorBody(response);
  return typeof body.message === "string" ? body.message : fallback;
}
