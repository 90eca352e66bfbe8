import { useState } from 'preact/hooks';
import { getFunction, getVersions } from '../api.js';
import { usePoll } from '../poll.js';
import { bytes, latency, localTime, memory, number, relative, seconds } from '../format.js';
import { StateBadge } from '../components/StateBadge.jsx';
import { Aliases } from '../components/Aliases.jsx';
import { Problem } from '../components/Problem.jsx';
import { Actions } from '../components/Actions.jsx';
import { Stats } from '../components/Stats.jsx';
import { Invoke } from '../components/Invoke.jsx';
import { Events } from '../components/Events.jsx';
import { Logs } from '../components/Logs.jsx';

function When({ t }) {
  if (t == null) return '—';
  return (
    <>
      <time dateTime={new Date(t * 1000).toISOString()}>{localTime(t)}</time> <span class="hint">({relative(t)})</span>
    </>
  );
}

function Configuration({ fn }) {
  const c = fn.config || {};
  const rows = [
    ['Memory', memory(c.memory_mb)],
    ['Max concurrency', number(c.max_concurrency)],
    ['Provisioned concurrency', number(c.provisioned_concurrency)],
    ['Timeout', seconds(c.timeout_s)],
    ['Payload limit', bytes(c.payload_limit_bytes)],
    ['Idle timeout', c.idle_timeout_s == null ? 'server default' : seconds(c.idle_timeout_s)],
    ['Queue timeout', c.queue_timeout_ms == null ? '—' : latency(c.queue_timeout_ms * 1000)],
    ['Deployed', <When t={fn.deployed_at} />],
    ['First deployed', <When t={fn.created_at} />],
    ['Description', fn.description || <span class="hint">none</span>],
    ['Model p50 / p99', fn.latency?.samples ? `${latency(fn.latency.model_p50_us)} / ${latency(fn.latency.model_p99_us)}` : '—'],
  ];
  return (
    <section aria-labelledby="config-title">
      <h2 id="config-title">Configuration of v{fn.version}</h2>
      <dl class="facts">
        {rows.map(([k, v]) => (
          <div key={k}>
            <dt>{k}</dt>
            <dd>{v}</dd>
          </div>
        ))}
      </dl>
    </section>
  );
}

function Versions({ name, info, onChanged }) {
  const list = info ? [...info.versions].sort((a, b) => b.version - a.version) : [];
  return (
    <section aria-labelledby="versions-title">
      <h2 id="versions-title">Versions</h2>
      <Actions name={name} info={info} onChanged={onChanged} />
      <div class="table-wrap" tabIndex={0} role="region" aria-labelledby="versions-title">
        <table data-testid="versions-table">
          <thead>
            <tr>
              <th scope="col">Version</th>
              <th scope="col">Aliases</th>
              <th scope="col" class="num">Traffic</th>
              <th scope="col">State</th>
              <th scope="col">Deployed</th>
              <th scope="col" class="num">Invocations</th>
              <th scope="col" class="num">5xx</th>
              <th scope="col">Description</th>
            </tr>
          </thead>
          <tbody>
            {list.map((v) => (
              <tr key={v.version} data-version={v.version}>
                <th scope="row">v{v.version}</th>
                <td>
                  <Aliases names={v.aliases || []} />
                </td>
                <td class="num">{v.percent ? `${v.percent}%` : '—'}</td>
                <td>
                  <StateBadge state={v.state} />
                </td>
                <td>
                  <time dateTime={new Date(v.deployed_at * 1000).toISOString()} title={relative(v.deployed_at)}>
                    {localTime(v.deployed_at)}
                  </time>
                </td>
                <td class="num">{number(v.invocations)}</td>
                <td class="num">{number(v.errors_5xx)}</td>
                <td>{v.description}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}

function Canary({ canary }) {
  if (!canary) return null;
  return (
    <p class="note">
      Canary v{canary.version} ({canary.state}) takes {canary.percent}% of live traffic against v{canary.baseline}
      {canary.state === 'running' && <>, judged at {localTime(canary.ends_at)}</>}.
    </p>
  );
}

async function load(name) {
  const [fn, info] = await Promise.all([getFunction(name), getVersions(name)]);
  return { fn, info };
}

export function FunctionPage({ name }) {
  const { data, error, refresh } = usePoll(() => load(name), [name]);
  // Bumped after an invocation or a change, so the panels refresh at once.
  const [tick, setTick] = useState(0);
  const changed = () => {
    refresh();
    setTick((t) => t + 1);
  };

  if (error?.code === 'not_found' && !data) {
    return (
      <>
        <h1 tabIndex={-1}>{name}</h1>
        <p class="note warn">
          There is no function named {name}. <a href="#/">Back to functions</a>
        </p>
      </>
    );
  }

  const fn = data?.fn;
  return (
    <>
      <p class="crumbs">
        <a href="#/">Functions</a> <span aria-hidden="true">/</span> {name}
      </p>
      <div class="page-head">
        <h1 tabIndex={-1}>{name}</h1>
        {fn && <StateBadge state={fn.state} />}
        <span class="live">
          live <strong data-testid="live-version">{fn ? `v${fn.aliases?.live ?? fn.version}` : '—'}</strong>
        </span>
      </div>
      <Problem error={error} what="this function" />
      {fn?.load_error && <p class="note warn">The last load failed: {fn.load_error}</p>}
      <Canary canary={fn?.canary} />
      {fn ? <Configuration fn={fn} /> : <section class="placeholder" aria-busy="true" />}
      <Versions name={name} info={data?.info} onChanged={changed} />
      <Stats name={name} tick={tick} />
      <Invoke name={name} versions={data?.info?.versions} onInvoked={changed} />
      <Logs name={name} />
      <Events name={name} tick={tick} />
    </>
  );
}
