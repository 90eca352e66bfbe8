import { useEffect, useRef, useState } from 'preact/hooks';

/**
 * A modal <dialog> that asks before a change. The browser traps focus inside it
 * and closes it on Escape; focus goes back to what opened it. `onConfirm` may
 * throw: its message stays in the dialog so the user can correct and retry.
 */
export function ConfirmDialog({ title, confirmLabel, canConfirm = true, onConfirm, onClose, children }) {
  const dialog = useRef(null);
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    const opener = document.activeElement;
    const d = dialog.current;
    d.showModal();
    (d.querySelector('[autofocus], input, select') || d.querySelector('button[type=submit]'))?.focus();
    return () => {
      if (d.open) d.close();
      opener?.focus?.();
    };
  }, []);

  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      await onConfirm();
      onClose();
    } catch (err) {
      setError(err.message);
      setBusy(false);
    }
  }

  return (
    <dialog
      ref={dialog}
      aria-labelledby="dialog-title"
      onCancel={(e) => {
        e.preventDefault();
        if (!busy) onClose();
      }}
    >
      <form onSubmit={submit} class="stack">
        <h2 id="dialog-title">{title}</h2>
        {children}
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <div class="row end">
          <button type="button" onClick={onClose} disabled={busy}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={busy || !canConfirm}>
            {busy ? 'Working…' : confirmLabel}
          </button>
        </div>
      </form>
    </dialog>
  );
}
