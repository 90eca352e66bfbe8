// Every number the console shows goes through here, so units stay consistent.

const DASH = '—';
const count = new Intl.NumberFormat();

export function number(n) {
  return n == null ? DASH : count.format(n);
}

/** Microseconds as milliseconds ("1.2 ms"), seconds past 10 s. */
export function latency(us) {
  if (us == null || us === '') return DASH;
  const ms = Number(us) / 1000;
  if (ms >= 10000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms >= 100) return `${Math.round(ms)} ms`;
  return `${ms.toFixed(ms < 1 ? 2 : 1)} ms`;
}

export function memory(mb) {
  if (mb == null) return DASH;
  return mb >= 1024 ? `${+(mb / 1024).toFixed(1)} GB` : `${mb} MB`;
}

export function bytes(n) {
  if (n == null) return DASH;
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function rate(perSecond) {
  if (perSecond == null) return DASH;
  // A quiet function still shows that something happened: 0.0033, not 0.00.
  const digits = perSecond === 0 ? '0' : perSecond < 0.1 ? perSecond.toPrecision(2) : perSecond.toFixed(perSecond < 10 ? 2 : 1);
  return `${digits} req/s`;
}

const compactFmt = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 2 });

/** Chart tick labels: short, the unit is in the chart's title. */
export function compact(n) {
  return n == null ? '' : compactFmt.format(n);
}

export function seconds(s) {
  return s == null ? DASH : `${s} s`;
}

/** Server times are unix seconds or RFC 3339 strings. */
function toDate(t) {
  return typeof t === 'number' ? new Date(t * 1000) : new Date(t);
}

export function localTime(t) {
  return t == null ? DASH : toDate(t).toLocaleString();
}

export function clockTime(t) {
  return toDate(t).toLocaleTimeString(undefined, {
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
    fractionalSecondDigits: 3,
    hour12: false,
  });
}

const relativeFmt = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
const STEPS = [
  [60, 'second'],
  [60, 'minute'],
  [24, 'hour'],
  [30, 'day'],
  [12, 'month'],
  [Infinity, 'year'],
];

/** "3 minutes ago": a hint next to an absolute time, never instead of it. */
export function relative(t, now = Date.now()) {
  if (t == null) return '';
  let v = (toDate(t).getTime() - now) / 1000;
  for (const [size, unit] of STEPS) {
    if (Math.abs(v) < size) return relativeFmt.format(Math.round(v), unit);
    v /= size;
  }
  return '';
}

export const STATE_LABELS = { 'scaled-to-zero': 'at zero', warm: 'warm', busy: 'busy' };
