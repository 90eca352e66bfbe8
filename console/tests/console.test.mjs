// Drives the console in Debian's Chromium against a running Nimbus server.
// Env: NIMBUS_SERVER (console at $NIMBUS_SERVER/console/), NIMBUS_TOKEN (admin),
// CHROMIUM (default /usr/bin/chromium), SCREENSHOTS (folder; optional).
// Preconditions: digits, sentiment and vision deployed; sentiment has versions 1
// and 2 with live = 2. The test rolls sentiment back and restores live after.
// DIGITS_WASM and DIGITS_MODEL (the digits example's component, and a copy of
// its model folder with one file of this run's own) are deployed from the
// Deploy page as `digits-console`, deleted after.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const SERVER = (process.env.NIMBUS_SERVER || 'http://127.0.0.1:8080').replace(/\/$/, '');
const TOKEN = process.env.NIMBUS_TOKEN;
const SHOTS = process.env.SCREENSHOTS;
const TIMEOUT = 15_000;
const DESKTOP = { width: 1280, height: 800 };
const DIGITS_WASM = process.env.DIGITS_WASM;
const DIGITS_MODEL = process.env.DIGITS_MODEL;
const DEPLOYED = 'digits-console';

async function api(method, path, body) {
  const res = await fetch(`${SERVER}${path}`, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
    body: body && JSON.stringify(body),
  });
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${await res.clone().text()}`);
  return res.json();
}

async function shot(page, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.evaluate(() => scrollTo(0, 0));
  await page.screenshot({ path: join(SHOTS, name) });
}

/** Polls `read` until `ok(value)`; the assertion message shows the last value. */
async function until(read, ok, what) {
  const deadline = Date.now() + TIMEOUT;
  let value;
  for (;;) {
    value = await read();
    if (ok(value)) return value;
    if (Date.now() > deadline) assert.fail(`${what}: last saw ${JSON.stringify(value)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe('Nimbus console', { timeout: 180_000 }, () => {
  let browser;
  let page;
  let liveBefore;
  let firstRequest;

  const readNumber = async (testid) => Number((await page.getByTestId(testid).textContent()).replace(/[^\d]/g, '') || NaN);

  async function invoke(body) {
    const panel = page.getByRole('region', { name: 'Invoke' });
    await panel.getByLabel('Content type').fill('application/jsonlines');
    await panel.getByLabel('Body').fill(body);
    const before = await page.getByTestId('request-id').textContent().catch(() => '');
    await panel.getByRole('button', { name: 'Send', exact: true }).click();
    await until(() => page.getByTestId('request-id').textContent().catch(() => ''), (id) => id && id !== '—' && id !== before, 'a new request id');
    return {
      id: await page.getByTestId('request-id').textContent(),
      version: await page.getByTestId('served-version').textContent(),
      answer: await page.getByTestId('invoke-answer').textContent(),
    };
  }

  before(async () => {
    assert.ok(TOKEN, 'NIMBUS_TOKEN must be set');
    liveBefore = (await api('GET', '/v1/functions/sentiment/versions')).live;
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: ['--no-sandbox'],
      headless: true,
    });
    page = await browser.newPage({ viewport: DESKTOP });
    page.setDefaultTimeout(TIMEOUT);
  });

  after(async () => {
    await browser?.close();
    await fetch(`${SERVER}/v1/functions/${DEPLOYED}`, { method: 'DELETE', headers: { Authorization: `Bearer ${TOKEN}` } });
    // Leave the server as the harness set it up, so the test can run again.
    if (liveBefore != null) await api('PUT', '/v1/functions/sentiment/aliases/live', { version: liveBefore });
  });

  it('signs in with the token', async () => {
    await page.goto(`${SERVER}/console/`);
    await page.getByLabel('Admin token').fill(TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { level: 1, name: 'Functions' }).waitFor();
    assert.ok(!page.url().includes(TOKEN), 'the token is not in the URL');
    const stored = await page.evaluate(() => ({ local: Object.values(localStorage), session: Object.values(sessionStorage) }));
    assert.ok(stored.session.includes(TOKEN), 'the token is kept in sessionStorage');
    assert.ok(!stored.local.includes(TOKEN), 'the token is not in localStorage');
  });

  it('lists the three examples with their state', async () => {
    for (const name of ['digits', 'sentiment', 'vision']) {
      const row = page.locator(`[data-testid="function-row"][data-name="${name}"]`);
      await row.waitFor();
      assert.match(await row.getByTestId('state-badge').textContent(), /^(at zero|warm|busy)$/);
      assert.match(await row.textContent(), /\d+(\.\d+)? GB/);
    }
    await shot(page, 'functions.png');
  });

  it('opens sentiment and shows its live version', async () => {
    await page.getByRole('link', { name: 'sentiment', exact: true }).click();
    await page.getByRole('heading', { level: 1, name: 'sentiment' }).waitFor();
    await until(() => page.getByTestId('live-version').textContent(), (v) => v === `v${liveBefore}`, 'live version');
    await page.getByTestId('versions-table').locator('tbody tr').nth(1).waitFor();
  });

  it('invokes sentiment and shows the answer and the serving version', async () => {
    await until(() => readNumber('invocations-total'), Number.isFinite, 'the invocation total to load');
    const counted = await readNumber('invocations-total');
    const r = await invoke('{"features": ["I love this product!"]}');
    assert.match(r.answer.replace(/\s/g, ''), /"predicted_label":1/);
    assert.equal(r.version, `v${liveBefore}`);
    firstRequest = r.id;
    await until(() => readNumber('invocations-total'), (n) => n >= counted + 1 && n >= 1, 'the invocation counted in the activity totals');
  });

  it('shows the invocation in the followed log tail', async () => {
    const row = page.locator(`[data-testid="log-row"][data-request-id="${firstRequest}"]`);
    await row.waitFor();
    assert.match(await row.textContent(), /200/);
    // Filtering by request id keeps that row and hides the others.
    await page.getByLabel('Filter by request id').fill(firstRequest);
    await until(() => page.getByTestId('log-row').count(), (n) => n >= 1, 'filtered rows');
    assert.deepEqual(
      [...new Set(await page.getByTestId('log-row').evaluateAll((rows) => rows.map((r) => r.dataset.requestId)))],
      [firstRequest],
    );
    await page.getByLabel('Filter by request id').fill('');
    await shot(page, 'function.png');
  });

  it('rolls back after confirming, and version 1 then serves', async () => {
    await page.getByRole('button', { name: 'Roll back…' }).click();
    const dialog = page.getByRole('dialog', { name: /Roll back sentiment/ });
    await dialog.waitFor();
    assert.equal(await dialog.evaluate((d) => d.contains(document.activeElement)), true, 'focus moves into the dialog');
    await dialog.getByRole('button', { name: 'Roll back', exact: true }).click();
    await dialog.waitFor({ state: 'hidden' });
    await until(() => page.getByTestId('live-version').textContent(), (v) => v === 'v1', 'live version after rollback');
    const r = await invoke('{"features": ["I love this product!"]}');
    assert.equal(r.version, 'v1');
    await page.getByTestId('events-table').locator('tr[data-kind="rolled_back"]').first().waitFor();
  });

  it('reaches sign-out and the invoke button by keyboard, with a visible focus ring', async () => {
    await page.reload();
    await page.getByRole('heading', { level: 1, name: 'sentiment' }).waitFor();
    const reached = new Set();
    for (let i = 0; i < 150 && !(reached.has('Sign out') && reached.has('Send')); i++) {
      await page.keyboard.press('Tab');
      const focused = await page.evaluate(() => {
        const el = document.activeElement;
        const style = getComputedStyle(el);
        return { name: el.textContent.trim(), tag: el.tagName, outline: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0 };
      });
      if (focused.tag === 'BUTTON' && ['Sign out', 'Send'].includes(focused.name)) {
        assert.ok(focused.outline, `${focused.name} shows a focus outline`);
        reached.add(focused.name);
      }
    }
    assert.deepEqual([...reached].sort(), ['Send', 'Sign out']);
  });

  it('renders on a phone and in the dark scheme', async () => {
    await page.evaluate(() => scrollTo(0, 0));
    await page.setViewportSize({ width: 390, height: 844 });
    await page.getByTestId('chart-invocations').waitFor();
    await shot(page, 'function-phone.png');
    await page.setViewportSize(DESKTOP);
    await page.emulateMedia({ colorScheme: 'dark' });
    await page.goto(`${SERVER}/console/#/`);
    await page.locator('[data-testid="function-row"]').first().waitFor();
    assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), 'dark');
    await shot(page, 'functions-dark.png');
  });

  it('deploys from the Deploy page, uploading only what the server lacks', async () => {
    assert.ok(DIGITS_WASM && DIGITS_MODEL, 'DIGITS_WASM and DIGITS_MODEL must be set');
    await page.goto(`${SERVER}/console/#/deploy`);
    await page.getByRole('heading', { level: 1, name: 'Deploy a function' }).waitFor();
    await page.getByLabel('Name', { exact: true }).fill(DEPLOYED);
    await page.getByLabel('Handler (.wasm)').setInputFiles(DIGITS_WASM);
    await page.getByLabel('Model folder').setInputFiles(DIGITS_MODEL);
    await until(() => page.locator('#deploy-model-help').textContent(), (t) => t.includes('digits.onnx'), 'the picked folder listed');
    await page.getByLabel('Memory').selectOption('1024');
    const submit = page.getByRole('button', { name: 'Deploy', exact: true });
    const result = page.getByTestId('deploy-result');
    await submit.click();
    await result.waitFor();
    const first = await result.textContent();
    // The harness deployed the same handler and model: only the folder's
    // extra file (made for this run) is new to the server.
    assert.match(first, new RegExp(`^${DEPLOYED} version 1: .*live is v1\\. 1 file uploaded \\(\\d+ B\\), 2 already stored`), first);
    const described = await api('GET', `/v1/functions/${DEPLOYED}`);
    assert.equal(described.config.memory_mb, 1024, JSON.stringify(described.config));

    // What the browser deployed answers like the example.
    const answer = await fetch(`${SERVER}/v1/functions/${DEPLOYED}/invocations`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'text/csv' },
      body: Array(64).fill('0').join(','),
    });
    assert.equal(answer.status, 200, await answer.clone().text());

    // The same bundle again is no new version, and nothing is sent twice.
    await submit.click();
    await until(() => result.textContent(), (t) => t !== first, 'the second answer');
    assert.match(await result.textContent(), new RegExp(`^${DEPLOYED} version 1: unchanged; .* 0 files uploaded \\(0 B\\), 3 already stored`));
    // Another memory tier is a new version, from the same stored files.
    await page.getByLabel('Memory').selectOption('2048');
    await submit.click();
    await until(() => result.textContent(), (t) => t.startsWith(`${DEPLOYED} version 2:`), 'the second version');
    assert.match(await result.textContent(), / 0 files uploaded \(0 B\), 3 already stored/);

    // Not a component: the server's reason is shown and nothing is deployed.
    await page.getByLabel('Handler (.wasm)').setInputFiles(join(DIGITS_MODEL, 'digits.onnx'));
    await submit.click();
    const error = page.locator('form.deploy p.error');
    await error.waitFor();
    assert.match(await error.textContent(), /invalid component: not a WebAssembly binary/);
    assert.equal(await result.count(), 0, 'no result shown for a failed deploy');
    const versions = await api('GET', `/v1/functions/${DEPLOYED}/versions`);
    assert.deepEqual(versions.versions.map((v) => v.version), [2, 1], JSON.stringify(versions));
    await shot(page, 'deploy.png');
  });
});
