import { useEffect, useState } from 'preact/hooks';

// One polite live region for the whole console: action results and errors are
// read out by screen readers and shown under the header.
let current = { text: '', tone: 'info' };
const listeners = new Set();

export function announce(text, tone = 'info') {
  current = { text, tone };
  listeners.forEach((fn) => fn(current));
}

export function useStatus() {
  const [status, setStatus] = useState(current);
  useEffect(() => {
    listeners.add(setStatus);
    return () => listeners.delete(setStatus);
  }, []);
  return status;
}
