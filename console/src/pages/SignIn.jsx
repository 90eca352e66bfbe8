import { useState } from 'preact/hooks';
import { checkToken } from '../api.js';
import { signIn, signOutNotice } from '../auth.js';

export function SignIn() {
  const [token, setToken] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const notice = signOutNotice();

  async function submit(e) {
    e.preventDefault();
    const t = token.trim();
    if (!t) return setError('Enter the admin token.');
    setBusy(true);
    setError('');
    try {
      await checkToken(t);
      signIn(t);
    } catch (err) {
      setError(err.status === 401 ? 'The server refused this token.' : err.message);
      setBusy(false);
    }
  }

  return (
    <div class="signin">
      <h1 tabIndex={-1}>Sign in</h1>
      {notice && <p class="note">{notice}</p>}
      <form onSubmit={submit} class="card stack">
        <label for="token">Admin token</label>
        <input
          id="token"
          type="password"
          autocomplete="current-password"
          value={token}
          onInput={(e) => setToken(e.currentTarget.value)}
          aria-describedby="token-help"
          aria-invalid={error ? 'true' : undefined}
          autoFocus
        />
        <p id="token-help" class="hint">
          From <code>--admin-token</code>, <code>NIMBUS_ADMIN_TOKEN</code> or <code>DATA_DIR/admin-token</code>. It is kept
          for this tab only.
        </p>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" class="primary" disabled={busy}>
          {busy ? 'Checking…' : 'Sign in'}
        </button>
      </form>
    </div>
  );
}
