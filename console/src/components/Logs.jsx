import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { followLogs } from '../api.js';
import { bytes, clockTime, latency, localTime } from '../format.js';

const CAP = 1000;
const BACKLOG = 200;
const RETRY_MS = 3000;

const keep = (list) => (list.length > CAP ? list.slice(list.length - CAP) : list);
function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * Drops what a reconnect replays: the stream restarts at the last entry's time,
 * so entries before it and ones already seen at that very time are repeats.
 */
function deduper() {
  let lastTime = null;
  let seen = new Set();
  const fn = (entry) => {
    const id = JSON.stringify(entry);
    if (lastTime && (entry.time < lastTime || (entry.time === lastTime && seen.has(id)))) return false;
    if (entry.time !== lastTime) {
      lastTime = entry.time;
      seen = new Set();
    }
    seen.add(id);
    return true;
  };
  fn.since = () => lastTime;
  return fn;
}

function Details({ e }) {
  if (e.kind !== 'invocation') return <code class={`line line-${e.kind}`}>{e.line}</code>;
  const tone = e.status >= 500 ? 'bad' : e.status >= 400 ? 'warn' : 'ok';
  return (
    <span class="log-inv">
      <span class={`tag tag-${tone}`}>{e.status}</span>
      {e.error && <code>{e.error}</code>}
      <span>model {latency(e.model_us)}</span>
      <span>overhead {latency(e.overhead_us)}</span>
      {e.cold && <span class="tag">cold</span>}
      <span>
        {bytes(e.bytes_in)} in, {bytes(e.bytes_out)} out
      </span>
    </span>
  );
}

function useLogStream(name, paused) {
  const [rows, setRows] = useState([]);
  const [waiting, setWaiting] = useState(0);
  const [state, setState] = useState({ phase: 'connecting' });
  const pending = useRef([]);
  const pausedRef = useRef(paused);
  const flushRef = useRef(() => {});

  useEffect(() => {
    const ctl = new AbortController();
    const fresh = deduper();
    let frame = 0;
    let seq = 0;
    // Entries are batched per animation frame: a burst re-renders once.
    const flush = () => {
      frame = 0;
      if (pausedRef.current) return setWaiting(pending.current.length);
      const add = pending.current;
      pending.current = [];
      setWaiting(0);
      if (add.length) setRows((r) => keep(r.concat(add)));
    };
    flushRef.current = flush;
    const onEntry = (entry) => {
      if (!fresh(entry)) return;
      // A sequence number gives each row a key that survives trimming.
      pending.current.push({ key: ++seq, ...entry });
      pending.current = keep(pending.current);
      frame ||= requestAnimationFrame(flush);
    };
    (async () => {
      while (!ctl.signal.aborted) {
        try {
          const since = fresh.since();
          await followLogs(name, {
            since,
            limit: since ? CAP : BACKLOG,
            signal: ctl.signal,
            onEntry,
            onLive: () => setState({ phase: 'live' }),
          });
          setState({ phase: 'retrying', why: 'the stream ended' });
        } catch (error) {
          if (ctl.signal.aborted || error.status === 401) return;
          setState({ phase: 'retrying', why: error.message });
        }
        await pause(RETRY_MS, ctl.signal);
      }
    })();
    return () => {
      ctl.abort();
      cancelAnimationFrame(frame);
    };
  }, [name]);

  useEffect(() => {
    pausedRef.current = paused;
    flushRef.current();
  }, [paused]);

  return { rows, waiting, state };
}

const PHASES = { connecting: 'Connecting…', live: 'Following', retrying: 'Reconnecting' };

/** A live tail of a function's invocations and guest output. */
export function Logs({ name }) {
  const [paused, setPaused] = useState(false);
  const [filter, setFilter] = useState('');
  const { rows, waiting, state } = useLogStream(name, paused);
  const box = useRef(null);
  const atBottom = useRef(true);
  const needle = filter.trim().toLowerCase();
  const shown = needle ? rows.filter((e) => e.request_id?.toLowerCase().includes(needle)) : rows;

  // Stick to the newest line unless the reader has scrolled up to look at something.
  useLayoutEffect(() => {
    if (atBottom.current && box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [shown.length]);

  return (
    <section aria-labelledby="logs-title">
      <div class="section-head">
        <h2 id="logs-title">Log tail</h2>
        <span class={`hint phase-${state.phase}`} data-testid="log-phase">
          {paused ? `Paused${waiting ? `: ${waiting} new` : ''}` : PHASES[state.phase] || ''}
          {state.phase === 'retrying' && ` (${state.why})`}
        </span>
      </div>
      <div class="row">
        <button type="button" aria-pressed={paused ? 'true' : 'false'} onClick={() => setPaused(!paused)}>
          {paused ? 'Resume' : 'Pause'}
        </button>
        <label class="inline grow">
          Filter by request id
          <input type="search" value={filter} onInput={(e) => setFilter(e.currentTarget.value)} spellcheck={false} />
        </label>
        <span class="hint">
          {shown.length} of {rows.length} lines (newest {CAP} kept)
        </span>
      </div>
      <div
        class="table-wrap logs"
        ref={box}
        tabIndex={0}
        role="region"
        aria-label="Log lines"
        onScroll={(e) => {
          const el = e.currentTarget;
          atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
        }}
      >
        <table>
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Request</th>
              <th scope="col" class="num">Version</th>
              <th scope="col">Kind</th>
              <th scope="col">Details</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((e) => (
              <tr key={e.key} data-testid="log-row" data-request-id={e.request_id} data-kind={e.kind}>
                <td>
                  <time dateTime={e.time} title={`${localTime(e.time)} on ${e.host}`}>
                    {clockTime(e.time)}
                  </time>
                </td>
                <td>
                  <code>{e.request_id}</code>
                </td>
                <td class="num">v{e.version}</td>
                <td>{e.kind}</td>
                <td>
                  <Details e={e} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {rows.length === 0 && state.phase === 'live' && <p class="hint pad">No log lines yet: invoke the function.</p>}
      </div>
    </section>
  );
}
