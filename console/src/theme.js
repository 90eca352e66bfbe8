import { useEffect, useState } from 'preact/hooks';

// The color scheme follows the system until the user picks one; the pick is a
// preference, not a secret, so localStorage is fine for it.
const KEY = 'nimbus-console-theme';
const media = matchMedia('(prefers-color-scheme: dark)');

function effective() {
  return localStorage.getItem(KEY) || (media.matches ? 'dark' : 'light');
}

function apply() {
  document.documentElement.dataset.theme = effective();
}

apply();

export function useTheme() {
  const [theme, setTheme] = useState(effective);
  useEffect(() => {
    const on = () => {
      apply();
      setTheme(effective());
    };
    media.addEventListener('change', on);
    return () => media.removeEventListener('change', on);
  }, []);
  const toggle = () => {
    localStorage.setItem(KEY, theme === 'dark' ? 'light' : 'dark');
    apply();
    setTheme(effective());
  };
  return [theme, toggle];
}

/** The theme in force, for code (the charts) that draws with colors outside CSS. */
export function useAppliedTheme() {
  const root = document.documentElement;
  const [theme, setTheme] = useState(root.dataset.theme);
  useEffect(() => {
    const watcher = new MutationObserver(() => setTheme(root.dataset.theme));
    watcher.observe(root, { attributes: true, attributeFilter: ['data-theme'] });
    return () => watcher.disconnect();
  }, []);
  return theme;
}
