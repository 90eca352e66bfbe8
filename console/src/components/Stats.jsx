import { useEffect, useState } from 'preact/hooks';
import { getFunctionStats } from '../api.js';
import { usePoll } from '../poll.js';
import { latency, number, rate } from '../format.js';
import { Chart } from './Chart.jsx';
import { Problem } from './Problem.jsx';

const WINDOWS = [5, 15, 30];
const column = (points, key, f = (v) => v) => points.map((p) => (p[key] == null ? null : f(p[key])));
const ms = (us) => us / 1000;
const total = (points, key) => points.reduce((a, p) => a + (p[key] || 0), 0);
const whole = (v) => number(Math.round(v * 100) / 100);

function Totals({ stats, minutes }) {
  const p = stats?.points || [];
  const items = [
    ['Invocations', stats ? number(total(p, 'invocations')) : '—', 'invocations-total'],
    ['Average', stats ? rate(total(p, 'invocations') / (p.length * stats.step_s || 1)) : '—'],
    ['Errors', stats ? number(total(p, 'errors_4xx') + total(p, 'errors_5xx')) : '—'],
    ['Cold starts', stats ? number(total(p, 'cold_starts')) : '—'],
    ['Throttles', stats ? number(total(p, 'throttles')) : '—'],
  ];
  return (
    <dl class="totals" aria-label={`Totals over the last ${minutes} minutes`}>
      {items.map(([label, value, testid]) => (
        <div key={label}>
          <dt>{label}</dt>
          <dd data-testid={testid}>{value}</dd>
        </div>
      ))}
    </dl>
  );
}

/** Live charts of one function from /stats, merged across the cluster's hosts. */
export function Stats({ name, tick }) {
  const [minutes, setMinutes] = useState(15);
  const { data, error, refresh } = usePoll(() => getFunctionStats(name, minutes), [name, minutes]);
  useEffect(() => {
    if (tick) refresh();
  }, [tick]);

  const points = data?.points || [];
  const step = data?.step_s || 5;
  const x = points.map((p) => p.t);
  const missing = data?.missing_hosts?.length ? data.missing_hosts : null;

  return (
    <section aria-labelledby="stats-title">
      <div class="section-head">
        <h2 id="stats-title">Activity</h2>
        <label class="inline">
          Window
          <select value={minutes} onChange={(e) => setMinutes(Number(e.currentTarget.value))}>
            {WINDOWS.map((m) => (
              <option value={m} key={m}>
                last {m} min
              </option>
            ))}
          </select>
        </label>
      </div>
      <Problem error={error} what="activity stats" />
      {missing && <p class="note warn">No answer from {missing.join(', ')}: these numbers leave those hosts out.</p>}
      <Totals stats={data} minutes={minutes} />
      <div class="charts">
        <Chart
          title="Invocations per second"
          testid="chart-invocations"
          x={x}
          format={(v) => rate(v)}
          series={[{ label: 'req/s', values: column(points, 'invocations', (v) => v / step), color: '--c1' }]}
        />
        <Chart
          title="Latency (ms)"
          testid="chart-latency"
          x={x}
          format={(v) => latency(v * 1000)}
          series={[
            { label: 'model p50', values: column(points, 'model_p50_us', ms), color: '--c1', dots: true },
            { label: 'model p99', values: column(points, 'model_p99_us', ms), color: '--c2', dots: true },
            { label: 'overhead p50', values: column(points, 'overhead_p50_us', ms), color: '--c3', dots: true },
            { label: 'overhead p99', values: column(points, 'overhead_p99_us', ms), color: '--c4', dots: true },
          ]}
        />
        <Chart
          title={`Cold starts and throttles (per ${step} s)`}
          testid="chart-cold"
          x={x}
          format={whole}
          series={[
            { label: 'cold starts', values: column(points, 'cold_starts'), color: '--c3' },
            { label: 'throttles', values: column(points, 'throttles'), color: '--c2' },
          ]}
        />
        <Chart
          title="Instances"
          testid="chart-instances"
          x={x}
          format={whole}
          series={[
            { label: 'warm', values: column(points, 'warm'), color: '--c1' },
            { label: 'busy', values: column(points, 'busy'), color: '--c4' },
          ]}
        />
      </div>
    </section>
  );
}
