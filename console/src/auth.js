// The token lives in sessionStorage only: it dies with the tab and never reaches a URL,
// localStorage, or another tab.
const KEY = 'nimbus-console-token';
const listeners = new Set();
let notice = '';

export function getToken() {
  return sessionStorage.getItem(KEY);
}

export function signIn(token) {
  sessionStorage.setItem(KEY, token);
  notice = '';
  listeners.forEach((fn) => fn());
}

/** Forgets the token; `why` is shown on the sign-in form (e.g. after a 401). */
export function signOut(why = '') {
  sessionStorage.removeItem(KEY);
  notice = why;
  listeners.forEach((fn) => fn());
}

export function signOutNotice() {
  return notice;
}

export function onAuthChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
