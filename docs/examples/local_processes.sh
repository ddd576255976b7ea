#!/usr/bin/env bash
# Several processes on one machine, as on the Operations page: `aiolease server`, the CLI
# and two worker processes, with no AWS account and no credentials. The tests run it with
# PORT set to a free port and no AWS_* variables.
set -euo pipefail
cd "$(dirname "$0")"

# --8<-- [start:processes]
PORT=${PORT:-8000}
aiolease server --port "$PORT" --table leases &   # or in a shell of its own: Ctrl-C stops it
server=$!
export AIOLEASE_ENDPOINT_URL="http://127.0.0.1:$PORT" AIOLEASE_TABLE=leases
until aiolease ls > /dev/null 2>&1; do sleep 0.2; done   # up once the table is there

python pool_worker.py worker-1 & one=$!             # two processes, one item each
python pool_worker.py worker-2 & two=$!
wait "$one" "$two"
aiolease ls                                          # both items free again, token 1

kill -TERM "$server" && wait "$server"               # exit status 0; the tables are gone
# --8<-- [end:processes]
