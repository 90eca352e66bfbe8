import { useEffect, useState } from 'preact/hooks';

/** Parses `#/`, `#/functions/NAME` and `#/deploy`; anything else is unknown. */
function parseRoute(hash) {
  const path = hash.replace(/^#/, '') || '/';
  if (path === '/') return { page: 'list' };
  if (path === '/deploy') return { page: 'deploy' };
  const m = path.match(/^\/functions\/([^/]+)$/);
  if (m) return { page: 'function', name: decodeURIComponent(m[1]) };
  return { page: 'unknown' };
}

export const functionHref = (name) => `#/functions/${encodeURIComponent(name)}`;

export function useRoute() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return { hash, ...parseRoute(hash) };
}
