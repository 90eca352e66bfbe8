import { useEffect } from 'preact/hooks';
import { getEvents } from '../api.js';
import { usePoll } from '../poll.js';
import { localTime, relative } from '../format.js';
import { Problem } from './Problem.jsx';

const LIMIT = 200;
const BAD = new Set(['load_failed', 'canary_rolled_back', 'throttled', 'timeouts', 'memory_exceeded']);

/** The function's history (deploys, traffic moves, loads, trouble), newest first. */
export function Events({ name, tick }) {
  const { data, error, refresh } = usePoll(() => getEvents(name, LIMIT), [name]);
  useEffect(() => {
    if (tick) refresh();
  }, [tick]);
  const events = data ? [...data.events].reverse() : [];
  const cluster = new Set(events.map((e) => e.host)).size > 1;

  return (
    <section aria-labelledby="events-title">
      <h2 id="events-title">Events</h2>
      <Problem error={error} what="the event history" />
      {data?.truncated && <p class="hint">Showing the newest {LIMIT} events.</p>}
      <div class="table-wrap scroll-y" tabIndex={0} role="region" aria-labelledby="events-title">
        <table data-testid="events-table">
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Event</th>
              <th scope="col" class="num">Version</th>
              {cluster && <th scope="col">Host</th>}
              <th scope="col">What happened</th>
            </tr>
          </thead>
          <tbody>
            {data && events.length === 0 && (
              <tr>
                <td colSpan={cluster ? 5 : 4} class="hint">
                  No events yet.
                </td>
              </tr>
            )}
            {events.map((e) => (
              <tr key={`${e.time}|${e.kind}|${e.host}|${e.message}`} data-kind={e.kind}>
                <td>
                  <time dateTime={e.time} title={relative(e.time)}>
                    {localTime(e.time)}
                  </time>
                </td>
                <td>
                  <span class={`tag${BAD.has(e.kind) ? ' tag-bad' : ''}`}>{e.kind.replaceAll('_', ' ')}</span>
                </td>
                <td class="num">{e.version == null ? '' : `v${e.version}`}</td>
                {cluster && <td>{e.host}</td>}
                <td>{e.message}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}
