import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import { useAppliedTheme } from '../theme.js';
import { compact } from '../format.js';

const HEIGHT = 160;

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function describe(title, series, format) {
  const parts = series.map(({ label, values }) => {
    const seen = values.filter((v) => v != null);
    if (!seen.length) return `${label}: no data`;
    return `${label}: latest ${format(seen[seen.length - 1])}, peak ${format(Math.max(...seen))}`;
  });
  return `${title}. ${parts.join('; ')}.`;
}

/**
 * A uPlot time series. Colors come from the CSS theme (canvas cannot use CSS
 * variables), so the plot is rebuilt when the theme changes; data updates only
 * call setData. `series`: [{label, values, color: '--css-var', dots?}].
 */
export function Chart({ title, testid, x, series, format }) {
  const box = useRef(null);
  const plot = useRef(null);
  const theme = useAppliedTheme();
  const shape = series.map((s) => s.label).join('|');
  const data = [x, ...series.map((s) => s.values)];

  useEffect(() => {
    const el = box.current;
    const axis = { stroke: cssVar('--muted'), grid: { stroke: cssVar('--grid') }, ticks: { stroke: cssVar('--grid') } };
    plot.current = new uPlot(
      {
        width: el.clientWidth,
        height: HEIGHT,
        series: [
          {},
          ...series.map((s) => ({
            label: s.label,
            stroke: cssVar(s.color),
            width: 2,
            value: (u, v) => (v == null ? '—' : format(v)),
            // Sparse series (latency exists only in steps with requests) need dots to be seen.
            ...(s.dots && { points: { show: true, size: 5, fill: cssVar(s.color) } }),
          })),
        ],
        scales: { y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
        axes: [axis, { ...axis, size: 48, values: (u, ticks) => ticks.map(compact) }],
        legend: { live: true },
        cursor: { drag: { x: false, y: false } },
      },
      data,
      el,
    );
    const resize = new ResizeObserver(() => plot.current.setSize({ width: el.clientWidth, height: HEIGHT }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.current.destroy();
    };
  }, [theme, shape]);

  useEffect(() => {
    plot.current.setData(data);
  });

  return (
    <figure class="chart" data-testid={testid}>
      <figcaption>{title}</figcaption>
      <div ref={box} role="img" aria-label={describe(title, series, format)} />
    </figure>
  );
}
