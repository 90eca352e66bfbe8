import { listFunctions, getStats } from '../api.js';
import { usePoll } from '../poll.js';
import { functionHref } from '../route.js';
import { latency, memory, number } from '../format.js';
import { StateBadge } from '../components/StateBadge.jsx';
import { Aliases, aliasesOf } from '../components/Aliases.jsx';
import { Problem } from '../components/Problem.jsx';

const WINDOW_MIN = 15;
const ZERO = { invocations: 0, errors_4xx: 0, errors_5xx: 0, model_p50_us: null, model_p99_us: null };

async function load() {
  // The window stats are optional: an older server has only lifetime counters.
  const [functions, stats] = await Promise.all([listFunctions(), getStats(WINDOW_MIN).catch((e) => e)]);
  return { functions, stats };
}

function Traffic({ fn }) {
  if (!fn.traffic || fn.traffic.length < 2) return null;
  return <span class="hint"> split {fn.traffic.map((w) => `v${w.version} ${w.percent}%`).join(' / ')}</span>;
}

export function FunctionList() {
  const { data, error } = usePoll(load, []);
  const statsError = data?.stats instanceof Error ? data.stats : null;
  const windowed = data && !statsError;
  const rowStats = (fn) =>
    windowed ? data.stats.functions?.[fn.name] || ZERO : { ...fn, ...(fn.latency?.samples ? fn.latency : {}) };

  return (
    <>
      <div class="page-head">
        <h1 tabIndex={-1}>Functions</h1>
        <a class="button" href="#/deploy">
          Deploy a function
        </a>
      </div>
      <Problem error={error} what="the functions" />
      {statsError && <Problem error={statsError} what="the 15-minute stats" />}
      {data && data.functions.length === 0 && (
        <div class="card empty">
          <p>No functions are deployed yet.</p>
          <p>
            <a href="#/deploy">Deploy one here</a>, or from a terminal: <code>nimbus deploy NAME</code> in a folder with a{' '}
            <code>nimbus.toml</code>.
          </p>
        </div>
      )}
      {(!data || data.functions.length > 0) && (
        <div class="table-wrap" tabIndex={0} role="region" aria-label="Functions" aria-describedby="functions-note">
          <table class="functions" aria-busy={data ? 'false' : 'true'}>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">State</th>
                <th scope="col">Live version</th>
                <th scope="col">Memory</th>
                <th scope="col" class="num">Invocations</th>
                <th scope="col" class="num">Errors</th>
                <th scope="col" class="num">Model p50</th>
                <th scope="col" class="num">Model p99</th>
              </tr>
            </thead>
            <tbody>
              {!data && (
                <tr>
                  <td colSpan={8} class="hint">
                    Loading…
                  </td>
                </tr>
              )}
              {data?.functions.map((fn) => {
                const s = rowStats(fn);
                return (
                  <tr key={fn.name} data-testid="function-row" data-name={fn.name}>
                    <th scope="row">
                      <a href={functionHref(fn.name)}>{fn.name}</a>
                    </th>
                    <td>
                      <StateBadge state={s.state || fn.state} />
                    </td>
                    <td>
                      v{fn.aliases?.live ?? fn.version} <Aliases names={aliasesOf(fn.aliases, fn.aliases?.live ?? fn.version)} />
                      <Traffic fn={fn} />
                    </td>
                    <td>{memory(fn.config?.memory_mb)}</td>
                    <td class="num">{number(s.invocations)}</td>
                    <td class="num" title={`${number(s.errors_4xx)} client (4xx), ${number(s.errors_5xx)} server (5xx)`}>
                      {number((s.errors_4xx || 0) + (s.errors_5xx || 0))}
                    </td>
                    <td class="num">{latency(s.model_p50_us)}</td>
                    <td class="num">{latency(s.model_p99_us)}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      <p id="functions-note" class="hint">
        {windowed || !data
          ? `Invocations, errors and model latency over the last ${WINDOW_MIN} minutes, refreshed every 5 s.`
          : 'Counts and latency since the server started (the windowed stats could not be loaded), refreshed every 5 s.'}
      </p>
    </>
  );
}
