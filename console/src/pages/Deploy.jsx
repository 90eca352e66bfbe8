import { useState } from 'preact/hooks';
import { deployBundle, hasBlob, putBlob } from '../api.js';
import { sha256File } from '../hash.js';
import { bytes } from '../format.js';
import { functionHref } from '../route.js';
import { announce } from '../status.js';

const TIERS = [1024, 2048, 3072, 4096, 5120, 6144];
const NAME = '[A-Za-z0-9]([A-Za-z0-9\\-]{0,61}[A-Za-z0-9])?';

/** A folder pick gives "model/sub/x.onnx"; the bundle wants paths inside the folder. */
const insideFolder = (file) => file.webkitRelativePath.split('/').slice(1).join('/') || file.name;

/**
 * Content-addressed upload: hash every file, skip the blobs the server already
 * has, PUT the rest, then PUT the bundle that names them by digest.
 */
async function deploy(form, report) {
  const files = [{ role: 'wasm', file: form.wasm }, ...form.model.map((file) => ({ role: 'artifact', file, path: insideFolder(file) }))];
  for (const [i, f] of files.entries()) {
    report({ step: `Hashing ${f.file.name} (${i + 1} of ${files.length})` });
    f.digest = await sha256File(f.file);
  }
  report({ step: 'Checking which files the server already has' });
  const unique = [...new Map(files.map((f) => [f.digest, f])).values()];
  const missing = [];
  for (const f of unique) if (!(await hasBlob(f.digest))) missing.push(f);

  const total = missing.reduce((a, f) => a + f.file.size, 0);
  let done = 0;
  for (const [i, f] of missing.entries()) {
    const step = `Uploading ${f.file.name} (${i + 1} of ${missing.length})`;
    report({ step, sent: done, total });
    await putBlob(f.digest, f.file, (loaded) => report({ step, sent: done + loaded, total }));
    done += f.file.size;
  }

  report({ step: 'Deploying the bundle' });
  const bundle = {
    wasm: files[0].digest,
    artifacts: files.slice(1).map((f) => ({ path: f.path, digest: f.digest })),
    config: form.config,
  };
  if (form.description) bundle.description = form.description;
  const result = await deployBundle(form.name, bundle);
  return { ...result, uploaded: missing.length, skipped: unique.length - missing.length, sent: total };
}

function Progress({ progress }) {
  if (!progress) return null;
  return (
    <div class="progress" aria-live="polite">
      <p>{progress.step}</p>
      {progress.total > 0 && (
        <>
          <progress max={progress.total} value={progress.sent} aria-label="Upload progress" />
          <span class="hint">
            {bytes(progress.sent)} of {bytes(progress.total)}
          </span>
        </>
      )}
    </div>
  );
}

export function Deploy() {
  const [busy, setBusy] = useState(false);
  const [progress, setProgress] = useState(null);
  const [result, setResult] = useState(null);
  const [error, setError] = useState('');
  const [folder, setFolder] = useState([]);

  async function submit(e) {
    e.preventDefault();
    const data = new FormData(e.currentTarget);
    const int = (key) => Number(data.get(key));
    const form = {
      name: data.get('name').trim(),
      wasm: data.get('wasm'),
      model: folder,
      description: data.get('description').trim(),
      config: {
        memory_mb: int('memory'),
        max_concurrency: int('max_concurrency'),
        provisioned_concurrency: int('provisioned'),
        timeout_s: int('timeout'),
      },
    };
    setBusy(true);
    setError('');
    setResult(null);
    try {
      const r = await deploy(form, setProgress);
      setResult({ name: form.name, ...r });
      announce(`Deployed ${form.name} version ${r.version} (${r.deployment}).`, 'ok');
    } catch (err) {
      setError(err.message);
      announce(`Deploy failed: ${err.message}`, 'error');
    } finally {
      setBusy(false);
      setProgress(null);
    }
  }

  return (
    <>
      <h1 tabIndex={-1}>Deploy a function</h1>
      <form class="card stack deploy" onSubmit={submit}>
        <div class="field">
          <label for="deploy-name">Name</label>
          <input id="deploy-name" name="name" required pattern={NAME} maxLength={63} autocomplete="off" spellcheck={false} aria-describedby="deploy-name-help" />
          <p id="deploy-name-help" class="hint">
            Letters, digits and hyphens. Deploying to an existing name makes its next version.
          </p>
        </div>
        <div class="field">
          <label for="deploy-wasm">Handler (.wasm)</label>
          <input id="deploy-wasm" name="wasm" type="file" accept=".wasm,application/wasm" required />
        </div>
        <div class="field">
          <label for="deploy-model">Model folder</label>
          <input
            id="deploy-model"
            type="file"
            webkitdirectory
            multiple
            onChange={(e) => setFolder([...e.currentTarget.files])}
            aria-describedby="deploy-model-help"
          />
          <p id="deploy-model-help" class="hint">
            {folder.length
              ? `${folder.length} files, ${bytes(folder.reduce((a, f) => a + f.size, 0))}: ${folder.map(insideFolder).join(', ')}`
              : 'Mounted read-only at /model; each NAME.onnx becomes the graph NAME.'}
          </p>
        </div>
        <div class="fields">
          <div class="field">
            <label for="deploy-memory">Memory</label>
            <select id="deploy-memory" name="memory" defaultValue="2048">
              {TIERS.map((mb) => (
                <option value={mb} key={mb}>
                  {mb / 1024} GB
                </option>
              ))}
            </select>
          </div>
          <div class="field">
            <label for="deploy-timeout">Timeout (seconds)</label>
            <input id="deploy-timeout" name="timeout" type="number" min="1" max="60" defaultValue="60" required />
          </div>
          <div class="field">
            <label for="deploy-max">Max concurrency</label>
            <input id="deploy-max" name="max_concurrency" type="number" min="1" max="200" defaultValue="20" required />
          </div>
          <div class="field">
            <label for="deploy-provisioned">Provisioned concurrency</label>
            <input id="deploy-provisioned" name="provisioned" type="number" min="0" max="200" defaultValue="0" required />
          </div>
        </div>
        <div class="field">
          <label for="deploy-description">Description</label>
          <input id="deploy-description" name="description" maxLength={1024} />
        </div>
        <div class="row">
          <button type="submit" class="primary" disabled={busy}>
            {busy ? 'Deploying…' : 'Deploy'}
          </button>
        </div>
        <Progress progress={progress} />
        {error && <p class="error">{error}</p>}
        {result && (
          <p class="note ok" data-testid="deploy-result">
            {result.name} version {result.version}: {result.deployment}; live is v{result.live}.{' '}
            {result.uploaded} file{result.uploaded === 1 ? '' : 's'} uploaded ({bytes(result.sent)}), {result.skipped} already
            stored. <a href={functionHref(result.name)}>Open {result.name}</a>
          </p>
        )}
      </form>
    </>
  );
}
