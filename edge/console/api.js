// The REST client: JSON in and out, the access token on every call, a silent refresh when it
// expires, and errors as `ApiError`s carrying the envelope's code and message.

const BASE = "/api/v1";
const ACCESS = "warren.access";
const REFRESH = "warren.refresh";
const EXPIRES = "warren.expires";

/** An error answer: `message` is the envelope's, for people; `code` for the code. */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** Whether this browser holds a session. */
export function signedIn() {
  return Boolean(localStorage.getItem(REFRESH));
}

/** Keeps a sign-in or refresh answer's tokens. */
export function keep(pair) {
  localStorage.setItem(ACCESS, pair.access_token);
  localStorage.setItem(REFRESH, pair.refresh_token);
  localStorage.setItem(EXPIRES, String(Date.now() + pair.expires_in * 1000));
}

/** Forgets the session (this browser only). */
export function forget() {
  for (const key of [ACCESS, REFRESH, EXPIRES]) localStorage.removeItem(key);
}

/** A current access token, refreshed first when it expires within a minute. */
export async function accessToken() {
  const expires = Number(localStorage.getItem(EXPIRES) || 0);
  if (expires - Date.now() < 60_000) await refresh();
  return localStorage.getItem(ACCESS);
}

/** Rotates the refresh token. Tabs share it, and presenting a rotated one revokes the whole
 * session, so only one tab refreshes at a time and the others take what it stored. */
export async function refresh() {
  const seen = localStorage.getItem(REFRESH);
  const rotate = async () => {
    const current = localStorage.getItem(REFRESH);
    if (!current) throw new ApiError(401, "signed_out", "You are signed out.");
    if (current !== seen) return; // another tab refreshed while we waited
    const pair = await call("POST", "/auth/refresh", { refresh_token: current }, { anonymous: true });
    keep(pair);
  };
  if (navigator.locks) await navigator.locks.request("warren.refresh", rotate);
  else await rotate();
}

async function call(method, path, body, { anonymous = false, retried = false } = {}) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (!anonymous) headers.authorization = `Bearer ${await accessToken()}`;
  let response;
  try {
    response = await fetch(BASE + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "offline", "The platform cannot be reached. Check your connection.");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (response.ok) return data;
  const error = data && data.error ? data.error : {};
  if (response.status === 401 && !anonymous && !retried && error.code === "token_expired") {
    await refresh();
    return call(method, path, body, { retried: true });
  }
  if (response.status === 401 && !anonymous) {
    forget();
    window.dispatchEvent(new Event("warren:signed-out"));
  }
  throw new ApiError(
    response.status,
    error.code || "http_" + response.status,
    error.message || `The platform answered ${response.status}.`,
    error.details,
  );
}

export const api = {
  get: (path) => call("GET", path),
  post: (path, body = {}) => call("POST", path, body),
  patch: (path, body) => call("PATCH", path, body),
  del: (path) => call("DELETE", path),
  anonymous: (path, body) => call("POST", path, body, { anonymous: true }),
  public: (path) => call("GET", path, undefined, { anonymous: true }),
};
