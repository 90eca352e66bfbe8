/** How a failed request reads where its data would be. */
export function Problem({ error, what }) {
  if (!error) return null;
  return <p class="note warn">{`Could not load ${what}: ${error.message}`}</p>;
}
