/** Alias names as small tags, `live` first. */
export function Aliases({ names }) {
  const sorted = [...names].sort((a, b) => (a === 'live' ? -1 : b === 'live' ? 1 : a.localeCompare(b)));
  return (
    <span class="tags">
      {sorted.map((n) => (
        <span class={`tag${n === 'live' ? ' tag-live' : ''}`} key={n}>
          {n}
        </span>
      ))}
    </span>
  );
}

/** `{alias: version}` to the names pointing at `version`. */
export const aliasesOf = (aliases, version) =>
  Object.entries(aliases || {})
    .filter(([, v]) => v === version)
    .map(([k]) => k);
