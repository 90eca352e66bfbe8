#!/usr/bin/env bash
# `make run`: start `nimbus serve` on its embedded defaults (sled + local blob
# store under $NIMBUS_DATA_DIR), deploy every example from its nimbus.toml,
# print how to call them, then keep serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
addr="${NIMBUS_ADDR:-127.0.0.1:8080}"
data="${NIMBUS_DATA_DIR:-$root/.build/data}"
bin="$root/target/release/nimbus"

mkdir -p "$data"
"$bin" serve --addr "$addr" --data-dir "$data" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT INT TERM

export NIMBUS_SERVER="http://$addr"
for _ in $(seq 1 300); do
  if [ -s "$data/admin-token" ] && curl -fs "$NIMBUS_SERVER/healthz" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
export NIMBUS_TOKEN="$(cat "$data/admin-token")"

for manifest in examples/*/nimbus.toml; do
  (cd "$(dirname "$manifest")" && "$bin" deploy)
done

cat <<MSG

Nimbus is serving on $NIMBUS_SERVER with the examples deployed. Try:

  curl -s -X POST $NIMBUS_SERVER/v1/functions/sentiment/invocations \\
       -H 'Content-Type: application/jsonlines' \\
       -d '{"features": ["I love this product!"]}'

  export NIMBUS_SERVER=$NIMBUS_SERVER NIMBUS_TOKEN=\$(cat $data/admin-token)
  target/release/nimbus invoke digits --content-type text/csv --data @examples/digits/sample.csv
  target/release/nimbus invoke vision --content-type image/jpeg --data @examples/vision/sample.jpg
  target/release/nimbus list
  target/release/nimbus describe digits

Ctrl-C stops the server; functions persist in $data.
MSG
wait "$server"
