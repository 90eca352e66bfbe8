/** How a failed or missing endpoint reads where its data would be. */
export function Problem({ error, what }) {
  if (!error) return null;
  const text = error.missing
    ? `This server does not provide ${what} yet: it needs a newer Nimbus.`
    : `Could not load ${what}: ${error.message}`;
  return <p class="note warn">{text}</p>;
}
