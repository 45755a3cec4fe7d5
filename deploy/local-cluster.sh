#!/usr/bin/env bash
# A working local etcron cluster on this machine: one etcd, one master, two
# workers, the example jobs applied; then it shows jobs running and their output.
#
#   make demo                      # runs until Ctrl-C
#   DEMO_SECONDS=30 make demo      # shows 30 s of activity, then stops everything
#
# Everything listens on 127.0.0.1 only. State lives in ./run/ (or $DEMO_DIR),
# removed on start; a second demo on the same directory is refused (run.lock).
# SIGTERM or Ctrl-C stops the cluster and ends the script.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUN=${DEMO_DIR:-$ROOT/run}
PY=$ROOT/.venv/bin/python
ETCRON=$ROOT/.venv/bin/etcron
ETCD_PORT=${ETCD_PORT:-23790}
API_PORT=${API_PORT:-28070}
SECONDS_TO_SHOW=${DEMO_SECONDS:-0}
export COLUMNS=${COLUMNS:-160}

[ -x "$ETCRON" ] || bash scripts/bootstrap
exec 9>"$RUN.lock"
if ! flock -n 9; then
  echo "error: another demo is running on $RUN (stop it first, or set DEMO_DIR)" >&2
  exit 1
fi
rm -rf "$RUN" && mkdir -p "$RUN"
pids=()
names=()
cleanup() {
  trap - EXIT INT TERM
  echo; echo "== stopping the local cluster (workers drain first, etcd last)"
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    echo "   stopping ${names[$i]} (pid ${pids[$i]})"
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  echo "== stopped"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

TOKEN=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')
printf '%s\n' "$TOKEN" > "$RUN/token"; chmod 600 "$RUN/token"
# signed jobs (docs/security.md): the master signs, the workers run only what it signed
"$ETCRON" keygen --out "$RUN/keys" > /dev/null
cat > "$RUN/config.yaml" <<CFG
etcd:
  endpoints: ["127.0.0.1:$ETCD_PORT"]
master:
  listen: "127.0.0.1:$API_PORT"
  token_file: "$RUN/token"
  signing_key_file: "$RUN/keys/signing.key"
worker:
  lease_ttl: 6
  trusted_key_files: ["$RUN/keys/signing.pub"]
log:
  format: json
CFG

echo "== starting etcd on 127.0.0.1:$ETCD_PORT"
"$PY" -m devtools.etcd_process --data-dir "$RUN/etcd" --port "$ETCD_PORT" > "$RUN/etcd.log" 2>&1 &
pids+=($!); names+=(etcd)
up() { "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" >/dev/null 2>&1; }
for _ in $(seq 100); do up "http://127.0.0.1:$ETCD_PORT/health" && break; sleep 0.2; done

export ETCRON_CONFIG=$RUN/config.yaml ETCRON_SERVER=http://127.0.0.1:$API_PORT ETCRON_TOKEN=$TOKEN
echo "== starting the master on $ETCRON_SERVER"
"$ETCRON" master > "$RUN/master.log" 2>&1 &
pids+=($!); names+=(master)
port=$API_PORT
for w in worker-a worker-b; do
  port=$((port + 1))  # each worker's /metrics, /healthz, /readyz
  echo "== starting $w (metrics and health on 127.0.0.1:$port)"
  ETCRON_WORKER__ID=$w ETCRON_WORKER__LISTEN=127.0.0.1:$port "$ETCRON" worker > "$RUN/$w.log" 2>&1 &
  pids+=($!); names+=("$w")
done
for _ in $(seq 100); do up "$ETCRON_SERVER/v1/health" && break; sleep 0.2; done

echo "== applying examples/jobs.yaml"
"$ETCRON" apply -f examples/jobs.yaml
echo; "$ETCRON" get jobs
echo; echo "== workers"; "$ETCRON" workers

show() {
  echo; echo "== $(date -u +%H:%M:%S) jobs, their last and next runs"
  "$ETCRON" get jobs || true
  for job in hello disk-report; do
    echo "-- latest runs of '$job':"
    "$ETCRON" history "$job" -n 3 || true
  done
  echo "-- output of the latest run of 'hello':"
  "$ETCRON" logs hello 2>/dev/null || true
}
rel=${RUN#"$ROOT"/}
cat <<TRY

State, logs and the API token are in $RUN. In another terminal, from $ROOT:

  export ETCRON_SERVER=$ETCRON_SERVER ETCRON_TOKEN=\$(cat $rel/token) PATH=\$PWD/.venv/bin:\$PATH
  etcron get jobs
  etcron logs -f hello --all-runs

The web dashboard: $ETCRON_SERVER/ui/ (sign in with the token in $rel/token).

TRY
start=$SECONDS
while :; do
  # a background sleep and wait: a signal is handled at once, not after the sleep
  sleep 6 & wait $! || true
  show
  if [ "$SECONDS_TO_SHOW" -gt 0 ] && [ $((SECONDS - start)) -ge "$SECONDS_TO_SHOW" ]; then break; fi
done
