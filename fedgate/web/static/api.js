// Calls to fedgate's API with the operator's credential.
//
// The token is asked for once and kept in sessionStorage (gone when the tab closes); it
// travels only as an `Authorization: Bearer` header, never in a URL. A session cookie from
// POST /api/v1/login (HttpOnly, SameSite=Strict) is sent by the browser on its own.
// Server-sent events are read with fetch, since EventSource cannot send a header.

const TOKEN_KEY = "fedgate.token";

export class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail || title || `HTTP ${status}`);
    this.status = status;
    this.title = title || "";
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function withAuth(headers = {}) {
  const t = token();
  return t ? { ...headers, Authorization: `Bearer ${t}` } : headers;
}

// The problem+json the API answers errors with, as an ApiError.
async function failure(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not JSON: the status says enough
  }
  return new ApiError(response.status, body.title, body.detail);
}

export async function call(path, { method = "GET", json, body, headers, signal } = {}) {
  const init = { method, headers: withAuth(headers), signal, credentials: "same-origin" };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return response;
}

export async function getJson(path, options) {
  return (await call(path, options)).json();
}

// Sign in with a name and password: the cookie is set by the server, the token kept here.
export async function login(name, password) {
  const reply = await getJson("/api/v1/login", { method: "POST", json: { name, password } });
  setToken(reply.token);
  return reply;
}

// Each server-sent event of `path` as {event, data}, until the stream ends or `signal` aborts.
export async function* events(path, signal) {
  const response = await call(path, { headers: { Accept: "text/event-stream" }, signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const message = { event: "message", data: "" };
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) message.event = line.slice(7);
        else if (line.startsWith("data: ")) message.data += line.slice(6);
      }
      if (message.data) yield message;
    }
  }
}

// Fetch `path` with the credential and hand the body to the browser as a file download.
export async function download(path, fallbackName) {
  const response = await call(path);
  const disposition = response.headers.get("Content-Disposition") || "";
  const named = /filename="?([^";]+)"?/.exec(disposition);
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), {
    href: url,
    download: named ? named[1] : fallbackName,
  });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// An element with attributes and children (strings become text: never parsed as HTML).
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  node.append(...children.flat().filter((c) => c !== undefined && c !== null));
  return node;
}

export function bytes(n) {
  if (!Number.isFinite(n)) return "–";
  if (n < 1e3) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(2)} MB`;
  return `${(n / 1e9).toFixed(2)} GB`;
}

export function fixed(x, digits = 4) {
  return x === null || x === undefined || !Number.isFinite(x) ? "–" : x.toFixed(digits);
}
