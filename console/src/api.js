import { getToken, signOut } from './auth.js';

/** An error the server (or the network) gave; `message` is meant for people. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const enc = encodeURIComponent;

function authHeaders(token = getToken(), extra = {}) {
  return { Authorization: `Bearer ${token}`, ...extra };
}

async function errorFrom(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    // A proxy or an old server may answer without the JSON error shape.
  }
  const err = body?.error;
  return new ApiError(res.status, err?.code || `http_${res.status}`, err?.message || `${res.status} ${res.statusText}`);
}

function expire(err) {
  if (err.status === 401) signOut('The server refused the token (401). Sign in again.');
  return err;
}

/** fetch() with the token; throws ApiError on a non-2xx answer. */
export async function call(path, { method = 'GET', body, token, headers = {}, signal } = {}) {
  let res;
  try {
    res = await fetch(path, {
      method,
      signal,
      headers: authHeaders(token, body === undefined ? headers : { 'Content-Type': 'application/json', ...headers }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'unreachable', 'The server could not be reached.');
  }
  if (!res.ok) {
    const err = await errorFrom(res);
    // Checking a candidate token must not sign the current one out.
    throw token ? err : expire(err);
  }
  return res;
}

const json = async (path, opts) => (await call(path, opts)).json();

/** Every function, following the list's pages. */
export async function listFunctions() {
  const all = [];
  let after = '';
  do {
    const page = await json(`/v1/functions?limit=1000${after && `&after=${enc(after)}`}`);
    all.push(...page.functions);
    after = page.next || '';
  } while (after);
  return all;
}

export const checkToken = (token) => call('/v1/functions?limit=1', { token });
export const getFunction = (name) => json(`/v1/functions/${enc(name)}`);
export const getVersions = (name) => json(`/v1/functions/${enc(name)}/versions`);
export const getStats = (minutes) => json(`/v1/stats?minutes=${minutes}`);
export const getFunctionStats = (name, minutes) => json(`/v1/functions/${enc(name)}/stats?minutes=${minutes}`);
export const getEvents = (name, limit) => json(`/v1/functions/${enc(name)}/events?limit=${limit}`);

export const rollback = (name, to) =>
  json(`/v1/functions/${enc(name)}/rollback`, { method: 'POST', body: to == null ? {} : { to } });
export const setTraffic = (name, weights) =>
  json(`/v1/functions/${enc(name)}/traffic`, { method: 'PUT', body: { weights } });
export const setAlias = (name, alias, version) =>
  json(`/v1/functions/${enc(name)}/aliases/${enc(alias)}`, { method: 'PUT', body: { version } });
export const deployBundle = (name, bundle) => json(`/v1/functions/${enc(name)}`, { method: 'PUT', body: bundle });

/** Invokes a function; an error answer is a result to show, not an exception. */
export async function invoke(name, { body, contentType, accept, version }) {
  const headers = {};
  if (contentType) headers['Content-Type'] = contentType;
  if (accept) headers.Accept = accept;
  if (version) headers['x-nimbus-target-version'] = String(version);
  const started = performance.now();
  let res;
  try {
    res = await fetch(`/v1/functions/${enc(name)}/invocations`, {
      method: 'POST',
      headers: authHeaders(getToken(), headers),
      body,
    });
  } catch {
    throw new ApiError(0, 'unreachable', 'The server could not be reached.');
  }
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (res.status === 401) expire(new ApiError(401, 'unauthorized', ''));
  const h = (k) => res.headers.get(k);
  return {
    status: res.status,
    statusText: res.statusText,
    contentType: h('content-type') || '',
    bytes,
    version: h('x-nimbus-function-version'),
    modelUs: h('x-nimbus-model-latency-us'),
    overheadUs: h('x-nimbus-overhead-latency-us'),
    requestId: h('x-nimbus-request-id'),
    roundTripMs: performance.now() - started,
  };
}

/** 200 when the blob is stored, false on 404. */
export async function hasBlob(digest) {
  try {
    await call(`/v1/blobs/${digest}`, { method: 'HEAD' });
    return true;
  } catch (e) {
    if (e.status === 404) return false;
    throw e;
  }
}

/** PUTs a blob with XMLHttpRequest, the one browser API that reports upload progress. */
export function putBlob(digest, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', `/v1/blobs/${digest}`);
    xhr.setRequestHeader('Authorization', `Bearer ${getToken()}`);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onerror = () => reject(new ApiError(0, 'unreachable', 'The upload failed: the server could not be reached.'));
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) return resolve(JSON.parse(xhr.responseText));
      let err;
      try {
        err = JSON.parse(xhr.responseText).error;
      } catch {
        err = null;
      }
      reject(expire(new ApiError(xhr.status, err?.code || `http_${xhr.status}`, err?.message || `${xhr.status} ${xhr.statusText}`)));
    };
    xhr.send(file);
  });
}

/**
 * Follows a function's log as server-sent events. EventSource cannot send the
 * Authorization header (and the token must stay out of URLs), so the stream is
 * read with fetch and parsed here. Resolves when the stream ends.
 */
export async function followLogs(name, { since, limit, signal, onEntry, onLive }) {
  const q = new URLSearchParams({ follow: 'true', limit: String(limit) });
  if (since) q.set('since', since);
  const res = await call(`/v1/functions/${enc(name)}/logs?${q}`, { signal, headers: { Accept: 'text/event-stream' } });
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffered.indexOf('\n\n')) >= 0) {
      dispatch(buffered.slice(0, end), onEntry, onLive);
      buffered = buffered.slice(end + 2);
    }
  }
}

function dispatch(block, onEntry, onLive) {
  let event = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue; // keep-alive comment
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  // The server marks the end of the backlog with `event: live`.
  if (event === 'live') onLive?.();
  else if (event === 'message' && data.length) onEntry(JSON.parse(data.join('\n')));
}
