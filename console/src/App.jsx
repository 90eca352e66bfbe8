import { useEffect, useRef, useState } from 'preact/hooks';
import { getToken, onAuthChange, signOut } from './auth.js';
import { useRoute } from './route.js';
import { useTheme } from './theme.js';
import { announce, useStatus } from './status.js';
import { SignIn } from './pages/SignIn.jsx';
import { FunctionList } from './pages/FunctionList.jsx';
import { FunctionPage } from './pages/FunctionPage.jsx';
import { Deploy } from './pages/Deploy.jsx';

function useSignedIn() {
  const [token, setToken] = useState(getToken);
  useEffect(() => onAuthChange(() => setToken(getToken())), []);
  return Boolean(token);
}

function StatusLine() {
  const { text, tone } = useStatus();
  return (
    <div class={`status status-${tone}`} role="status" aria-live="polite">
      {text}
    </div>
  );
}

function Page({ route }) {
  if (route.page === 'list') return <FunctionList />;
  if (route.page === 'function') return <FunctionPage name={route.name} key={route.name} />;
  if (route.page === 'deploy') return <Deploy />;
  return (
    <>
      <h1 tabIndex={-1}>Not found</h1>
      <p>
        There is no page at <code>{route.hash}</code>. <a href="#/">Back to functions</a>
      </p>
    </>
  );
}

export function App() {
  const signedIn = useSignedIn();
  const route = useRoute();
  const [theme, toggleTheme] = useTheme();
  const main = useRef(null);
  const first = useRef(true);

  // After in-app navigation, move focus to the new page's heading so keyboard and
  // screen-reader users start there; on the first load the browser's start is kept.
  useEffect(() => {
    announce('');
    if (first.current) {
      first.current = false;
      return;
    }
    main.current?.querySelector('h1')?.focus();
  }, [route.hash, signedIn]);

  const current = (page) => (route.page === page ? 'page' : undefined);
  // The hash is the router, so the skip link moves focus itself instead of navigating.
  const skip = (e) => {
    e.preventDefault();
    main.current?.querySelector('h1')?.focus();
  };
  return (
    <>
      <a class="skip" href="#main" onClick={skip}>
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href="#/">
          Nimbus <span>console</span>
        </a>
        {signedIn && (
          <nav aria-label="Main">
            <a href="#/" aria-current={current('list') || (route.page === 'function' ? 'true' : undefined)}>
              Functions
            </a>
            <a href="#/deploy" aria-current={current('deploy')}>
              Deploy
            </a>
          </nav>
        )}
        <div class="top-actions">
          <button type="button" class="ghost" onClick={toggleTheme} aria-label={`Switch to ${theme === 'dark' ? 'light' : 'dark'} theme`}>
            {theme === 'dark' ? '☀ Light' : '☾ Dark'}
          </button>
          {signedIn && (
            <button type="button" class="ghost" onClick={() => signOut('You signed out.')}>
              Sign out
            </button>
          )}
        </div>
      </header>
      <StatusLine />
      <main id="main" ref={main}>
        {signedIn ? <Page route={route} /> : <SignIn />}
      </main>
    </>
  );
}
