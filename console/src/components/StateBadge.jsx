import { STATE_LABELS } from '../format.js';

/** The color repeats the text, never replaces it. */
export function StateBadge({ state }) {
  return (
    <span class={`badge state-${state || 'unknown'}`} data-testid="state-badge" data-state={state}>
      {STATE_LABELS[state] || state || 'unknown'}
    </span>
  );
}
