import { useEffect, useRef, useState, useCallback } from 'preact/hooks';

const REFRESH_MS = 5000;

/**
 * Calls `load` now and every `ms`, keeping the last good data while a refresh
 * runs or fails so tables and charts do not jump. Skips ticks while the tab is
 * hidden or a call is still in flight. `refresh()` loads again at once.
 */
export function usePoll(load, deps, ms = REFRESH_MS) {
  const [state, setState] = useState({ data: null, error: null });
  const busy = useRef(false);
  const generation = useRef(0);
  const loadRef = useRef(load);
  loadRef.current = load;

  const run = useCallback(async () => {
    if (busy.current) return;
    busy.current = true;
    const mine = generation.current;
    try {
      const data = await loadRef.current();
      if (mine === generation.current) setState({ data, error: null });
    } catch (error) {
      if (mine === generation.current) setState((s) => ({ data: s.data, error }));
    } finally {
      busy.current = false;
    }
  }, []);

  useEffect(() => {
    generation.current += 1;
    busy.current = false;
    setState({ data: null, error: null });
    run();
    const timer = setInterval(() => document.hidden || run(), ms);
    return () => clearInterval(timer);
  }, deps);

  return { ...state, refresh: run };
}
