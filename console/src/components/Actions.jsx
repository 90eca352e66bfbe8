import { useState } from 'preact/hooks';
import { rollback, setAlias, setTraffic } from '../api.js';
import { announce } from '../status.js';
import { ConfirmDialog } from './ConfirmDialog.jsx';

const MAX_SPLIT = 4;

/** The newest kept version older than live: what a plain rollback moves to. */
function previousOf(info) {
  return info.versions
    .map((v) => v.version)
    .filter((v) => v < info.live)
    .sort((a, b) => b - a)[0];
}

function RollbackDialog({ name, info, done, onClose }) {
  const previous = previousOf(info);
  const others = info.versions.map((v) => v.version).filter((v) => v !== info.live);
  const [to, setTo] = useState(previous != null ? '' : String(others[0] ?? ''));
  const target = to === '' ? previous : Number(to);
  return (
    <ConfirmDialog
      title={`Roll back ${name}`}
      confirmLabel="Roll back"
      canConfirm={target != null}
      onClose={onClose}
      onConfirm={async () => {
        const after = await rollback(name, to === '' ? null : target);
        done(`Rolled back ${name}: live is now v${after.live}.`);
      }}
    >
      <p>
        Live is v{info.live}. Moving <code>live</code> clears a traffic split and cancels a running canary; nothing is
        uploaded.
      </p>
      {others.length === 0 ? (
        <p class="note warn">No other version is kept, so there is nothing to roll back to.</p>
      ) : (
        <>
          <label for="rollback-to">Roll back to</label>
          <select id="rollback-to" value={to} onChange={(e) => setTo(e.currentTarget.value)}>
            {previous != null && <option value="">the previous version (v{previous})</option>}
            {others.map((v) => (
              <option value={String(v)} key={v}>
                v{v}
              </option>
            ))}
          </select>
        </>
      )}
    </ConfirmDialog>
  );
}

function TrafficDialog({ name, info, done, onClose }) {
  const current = Object.fromEntries((info.traffic || []).map((w) => [w.version, w.percent]));
  const [weights, setWeights] = useState(() =>
    Object.fromEntries(info.versions.map((v) => [v.version, String(current[v.version] ?? 0)])),
  );
  const chosen = Object.entries(weights)
    .map(([version, percent]) => ({ version: Number(version), percent: Number(percent) || 0 }))
    .filter((w) => w.percent > 0);
  const sum = chosen.reduce((a, w) => a + w.percent, 0);
  const problem =
    sum !== 100
      ? `The weights add up to ${sum}%, not 100%.`
      : chosen.length > MAX_SPLIT
        ? `At most ${MAX_SPLIT} versions can share traffic.`
        : chosen.some((w) => !Number.isInteger(w.percent))
          ? 'Use whole percents.'
          : '';
  return (
    <ConfirmDialog
      title={`Split traffic of ${name}`}
      confirmLabel="Set traffic"
      canConfirm={!problem}
      onClose={onClose}
      onConfirm={async () => {
        const after = await setTraffic(name, chosen);
        done(`Traffic of ${name} set: ${after.traffic.map((w) => `v${w.version} ${w.percent}%`).join(', ')}.`);
      }}
    >
      <p>
        Percent of <code>live</code> traffic per version (1 to {MAX_SPLIT} versions, 100% in all). <code>live</code> then
        names the largest share.
      </p>
      <div class="weights">
        {info.versions.map(({ version }) => (
          <label key={version}>
            v{version}
            <input
              type="number"
              min="0"
              max="100"
              step="1"
              inputMode="numeric"
              value={weights[version]}
              onInput={(e) => setWeights({ ...weights, [version]: e.currentTarget.value })}
            />
            %
          </label>
        ))}
      </div>
      <p class={problem ? 'error' : 'hint'} aria-live="polite">
        {problem || `Total ${sum}%.`}
      </p>
    </ConfirmDialog>
  );
}

const ALIAS_NAME = /^(?!\d+$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

function AliasDialog({ name, info, done, onClose }) {
  const [alias, setAliasName] = useState('');
  const [version, setVersion] = useState(String(info.live));
  const valid = ALIAS_NAME.test(alias);
  const moving = info.aliases?.[alias];
  return (
    <ConfirmDialog
      title={`Set an alias of ${name}`}
      confirmLabel={moving != null ? 'Move alias' : 'Set alias'}
      canConfirm={valid}
      onClose={onClose}
      onConfirm={async () => {
        await setAlias(name, alias, Number(version));
        done(`Alias ${alias} of ${name} now names v${version}.`);
      }}
    >
      <label for="alias-name">Alias</label>
      <input
        id="alias-name"
        list="alias-names"
        value={alias}
        onInput={(e) => setAliasName(e.currentTarget.value.trim())}
        aria-describedby="alias-help"
        autocomplete="off"
      />
      <datalist id="alias-names">
        {Object.keys(info.aliases || {}).map((a) => (
          <option value={a} key={a} />
        ))}
      </datalist>
      <p id="alias-help" class="hint">
        {moving != null
          ? `${alias} names v${moving} now.${alias === 'live' ? ' Moving live clears a split and cancels a canary.' : ''}`
          : 'Letters, digits and hyphens, not a number. Invoke it with ?alias=NAME.'}
      </p>
      <label for="alias-version">Version</label>
      <select id="alias-version" value={version} onChange={(e) => setVersion(e.currentTarget.value)}>
        {info.versions.map((v) => (
          <option value={String(v.version)} key={v.version}>
            v{v.version}
          </option>
        ))}
      </select>
    </ConfirmDialog>
  );
}

const DIALOGS = { rollback: RollbackDialog, traffic: TrafficDialog, alias: AliasDialog };

/** The buttons that change where traffic goes, each behind a confirmation. */
export function Actions({ name, info, onChanged }) {
  const [open, setOpen] = useState(null);
  const Dialog = DIALOGS[open];
  const done = (message) => {
    announce(message, 'ok');
    onChanged();
  };
  return (
    <div class="row actions">
      <button type="button" onClick={() => setOpen('rollback')} disabled={!info}>
        Roll back…
      </button>
      <button type="button" onClick={() => setOpen('traffic')} disabled={!info}>
        Set traffic…
      </button>
      <button type="button" onClick={() => setOpen('alias')} disabled={!info}>
        Set alias…
      </button>
      {Dialog && info && <Dialog name={name} info={info} done={done} onClose={() => setOpen(null)} />}
    </div>
  );
}
