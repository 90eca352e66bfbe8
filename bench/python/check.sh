#!/usr/bin/env bash
# Checks the Python baseline against Nimbus: starts `nimbus serve` on a
# scratch data dir, deploys each example, starts bench/python/server.py for
# each, and runs compare.py on every pair.
# Builds nothing: needs target/release/nimbus, the examples' .wasm files,
# and .build/venv with bench/python/requirements.txt installed.
#
#   bench/python/check.sh [digits sentiment vision]
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
py="$root/.build/venv/bin/python"
bin="$root/target/release/nimbus"
nimbus_port="${NIMBUS_PORT:-18180}"
python_port="${PYTHON_PORT:-18181}"

functions=("$@")
[ ${#functions[@]} -gt 0 ] || functions=(digits sentiment vision)

data="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$data"
}
trap cleanup EXIT INT TERM

NIMBUS_ORT_LIB="${NIMBUS_ORT_LIB:-$root/.build/onnxruntime/libonnxruntime.so}" \
  "$bin" serve --addr "127.0.0.1:$nimbus_port" --data-dir "$data" >"$data/nimbus.log" 2>&1 &
nimbus=$!
pids+=("$nimbus")
export NIMBUS_SERVER="http://127.0.0.1:$nimbus_port"
for _ in $(seq 1 300); do
  if [ -s "$data/admin-token" ] && curl -fs "$NIMBUS_SERVER/healthz" >/dev/null 2>&1; then break; fi
  kill -0 "$nimbus" 2>/dev/null || { cat "$data/nimbus.log"; exit 1; }
  sleep 0.1
done
export NIMBUS_TOKEN="$(cat "$data/admin-token")"

status=0
for f in "${functions[@]}"; do
  if [ ! -f "examples/$f/nimbus.toml" ] || [ ! -d "examples/$f/model" ]; then
    echo "== $f: no example or model here, skipped"
    continue
  fi
  echo "== $f"
  (cd "examples/$f" && "$bin" deploy >/dev/null)
  "$py" bench/python/server.py --function "$f" --model-dir "examples/$f/model" --port "$python_port" \
    >"$data/python-$f.log" 2>&1 &
  server=$!
  pids+=("$server")
  for _ in $(seq 1 600); do
    curl -fs "http://127.0.0.1:$python_port/ping" >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { cat "$data/python-$f.log"; exit 1; }
    sleep 0.05
  done
  "$py" bench/python/compare.py --function "$f" \
    --python "http://127.0.0.1:$python_port/invocations" \
    --nimbus "$NIMBUS_SERVER/v1/functions/$f/invocations" || status=1
  kill "$server"
  wait "$server" 2>/dev/null || true
done
exit $status
