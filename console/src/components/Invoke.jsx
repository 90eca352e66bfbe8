import { useRef, useState } from 'preact/hooks';
import { invoke } from '../api.js';
import { bytes, latency } from '../format.js';

const TYPES = [
  'application/json',
  'application/jsonlines',
  'text/csv',
  'text/plain',
  'image/jpeg',
  'image/png',
  'application/octet-stream',
];

const TEXTUAL = /^(text\/|application\/(json|jsonlines|x-ndjson|ndjson|xml|csv)\b|application\/[\w.+-]*\+json\b)/i;

/** The answer as something readable: pretty JSON, text, or the size of binary bytes. */
function render(result) {
  const type = result.contentType;
  if (result.bytes.length === 0) return { kind: 'empty' };
  if (type && !TEXTUAL.test(type)) return { kind: 'binary' };
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(result.bytes);
  } catch {
    return { kind: 'binary' };
  }
  if (/json\b/i.test(type) && !/jsonlines/i.test(type)) {
    try {
      return { kind: 'text', text: JSON.stringify(JSON.parse(text), null, 2) };
    } catch {
      // Not JSON after all: show it as it came.
    }
  }
  return { kind: 'text', text };
}

function errorMessage(result) {
  if (result.status < 400) return null;
  try {
    return JSON.parse(new TextDecoder().decode(result.bytes)).error;
  } catch {
    return null;
  }
}

function Result({ result }) {
  const body = render(result);
  const err = errorMessage(result);
  const ok = result.status < 400;
  return (
    <div class="result">
      <dl class="facts" aria-live="polite">
        <div>
          <dt>Status</dt>
          <dd data-testid="invoke-status">
            <span class={`tag tag-${ok ? 'ok' : result.status >= 500 ? 'bad' : 'warn'}`}>{result.status}</span>{' '}
            {result.statusText}
          </dd>
        </div>
        <div>
          <dt>Served by</dt>
          <dd data-testid="served-version">{result.version ? `v${result.version}` : '—'}</dd>
        </div>
        <div>
          <dt>Model latency</dt>
          <dd>{latency(result.modelUs)}</dd>
        </div>
        <div>
          <dt>Overhead latency</dt>
          <dd>{latency(result.overheadUs)}</dd>
        </div>
        <div>
          <dt>Round trip</dt>
          <dd>{latency(result.roundTripMs * 1000)}</dd>
        </div>
        <div class="wide">
          <dt>Request id</dt>
          <dd>
            <code data-testid="request-id">{result.requestId || '—'}</code>
          </dd>
        </div>
      </dl>
      {err ? (
        <p class="error">
          <code>{err.code}</code>: {err.message}
        </p>
      ) : body.kind === 'text' ? (
        <pre class="answer" data-testid="invoke-answer" tabIndex={0} aria-label="Answer">
          {body.text}
        </pre>
      ) : (
        <p class="hint" data-testid="invoke-answer">
          {body.kind === 'empty'
            ? 'The answer has no body.'
            : `A binary answer of ${bytes(result.bytes.length)}${result.contentType ? ` (${result.contentType})` : ''}.`}
        </p>
      )}
    </div>
  );
}

/** Sends one request to the function, as a client would, and shows what came back. */
export function Invoke({ name, versions, onInvoked }) {
  const [contentType, setContentType] = useState('application/json');
  const [accept, setAccept] = useState('');
  const [version, setVersion] = useState('');
  const [text, setText] = useState('');
  const [file, setFile] = useState(null);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState(null);
  const [error, setError] = useState('');
  const fileInput = useRef(null);

  function clearFile() {
    setFile(null);
    fileInput.current.value = '';
  }

  function pick(e) {
    const f = e.currentTarget.files[0] || null;
    setFile(f);
    if (f?.type) setContentType(f.type);
  }

  async function send(e) {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      setResult(await invoke(name, { body: file || text, contentType: contentType.trim(), accept: accept.trim(), version }));
      onInvoked();
    } catch (err) {
      setError(err.message);
    } finally {
      setBusy(false);
    }
  }

  return (
    <section aria-labelledby="invoke-title">
      <h2 id="invoke-title">Invoke</h2>
      <div class="grid-2 align-start">
        <form class="stack" onSubmit={send}>
          <div class="fields">
            <div class="field">
              <label for="invoke-type">Content type</label>
              <input id="invoke-type" list="invoke-types" value={contentType} onInput={(e) => setContentType(e.currentTarget.value)} autocomplete="off" spellcheck={false} />
              <datalist id="invoke-types">
                {TYPES.map((t) => (
                  <option value={t} key={t} />
                ))}
              </datalist>
            </div>
            <div class="field">
              <label for="invoke-accept">Accept</label>
              <input id="invoke-accept" value={accept} placeholder="*/*" onInput={(e) => setAccept(e.currentTarget.value)} autocomplete="off" spellcheck={false} />
            </div>
            <div class="field">
              <label for="invoke-version">Version</label>
              <select id="invoke-version" value={version} onChange={(e) => setVersion(e.currentTarget.value)}>
                <option value="">live (by traffic weight)</option>
                {(versions || []).map((v) => (
                  <option value={String(v.version)} key={v.version}>
                    v{v.version}
                  </option>
                ))}
              </select>
            </div>
            <div class="field">
              <label for="invoke-file">Or send a file</label>
              <input id="invoke-file" type="file" ref={fileInput} onChange={pick} />
            </div>
          </div>
          <label for="invoke-body">Body</label>
          <textarea
            id="invoke-body"
            rows={5}
            value={text}
            onInput={(e) => setText(e.currentTarget.value)}
            disabled={Boolean(file)}
            spellcheck={false}
            placeholder='{"features": ["I love this product!"]}'
          />
          {file && (
            <p class="hint">
              Sending the file {file.name} ({bytes(file.size)}) instead of the text.{' '}
              <button type="button" class="link" onClick={clearFile}>
                Send the text instead
              </button>
            </p>
          )}
          <div class="row">
            <button type="submit" class="primary" disabled={busy}>
              {busy ? 'Sending…' : 'Send'}
            </button>
          </div>
          {error && (
            <p class="error" role="alert">
              {error}
            </p>
          )}
        </form>
        {result ? (
          <Result result={result} />
        ) : (
          <p class="hint">The answer, its status, the version that served it and its latency show here.</p>
        )}
      </div>
    </section>
  );
}
