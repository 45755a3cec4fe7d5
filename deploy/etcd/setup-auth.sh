#!/usr/bin/env bash
# Create one etcd user per role for etcron and turn authentication on.
#   ETCDCTL_ENDPOINTS=https://127.0.0.1:2379 ETCDCTL_CACERT=certs/ca.crt \
#   ETCDCTL_CERT=certs/master.crt ETCDCTL_KEY=certs/master.key \
#   deploy/etcd/setup-auth.sh [PREFIX [OUT_DIR]]        PREFIX default /cron
#
# Passwords are generated here and never appear on a command line (where any
# local user could read them from /proc): etcdctl reads each one from its
# standard input (`user add NAME --interactive=false`).
# With OUT_DIR, each password goes to OUT_DIR/<user>.password (mode 0600, in a
# 0700 directory) and nothing secret is printed; without it, the passwords are
# printed once on standard output.
set -euo pipefail
umask 077
P=${1:-/cron}
OUT=${2:-}
[[ $P == /* && $P != */ ]] || { echo "setup-auth.sh: PREFIX must start with / and not end with /: $P" >&2; exit 2; }
command -v etcdctl >/dev/null || { echo "setup-auth.sh: etcdctl not found (Debian: apt install etcd-client)" >&2; exit 2; }
if [[ -n $OUT ]]; then
  mkdir -p "$OUT" && chmod 0700 "$OUT"
  for u in root etcron-master etcron-worker; do
    [[ ! -e $OUT/$u.password ]] || { echo "setup-auth.sh: $OUT/$u.password exists; not overwriting" >&2; exit 2; }
  done
fi

ctl() { ETCDCTL_API=3 etcdctl "$@"; }
pw() { head -c 18 /dev/urandom | base64 | tr -d '/+='; }
add_user() { # name password: the password goes through stdin only
  printf '%s\n' "$2" | ctl user add "$1" --interactive=false >/dev/null
}
grant() { # role perm key [--prefix]
  ctl role grant-permission "$1" "${@:4}" "$2" "$3" >/dev/null
}

ROOT_PW=$(pw); MASTER_PW=$(pw); WORKER_PW=$(pw)
add_user root "$ROOT_PW"
ctl role add root >/dev/null 2>&1 || true
ctl user grant-role root root >/dev/null
# masters: everything under the prefix
ctl role add etcron-master >/dev/null
grant etcron-master readwrite "$P/" --prefix=true
add_user etcron-master "$MASTER_PW"
ctl user grant-role etcron-master etcron-master >/dev/null
# workers: read job definitions and the requests masters make (manual runs, kills,
# the output budget, master clocks); write only what a run needs.
# The grants are scheduler/roles.py's (tests/unit/test_roles.py keeps them equal).
ctl role add etcron-worker >/dev/null
for d in jobs masters trigger killer; do
  grant etcron-worker read "$P/$d/" --prefix=true
done
grant etcron-worker read "$P/budget"
for d in lock ticks workers runs output taken replace repairs; do
  grant etcron-worker readwrite "$P/$d/" --prefix=true
done
add_user etcron-worker "$WORKER_PW"
ctl user grant-role etcron-worker etcron-worker >/dev/null
ctl auth enable >/dev/null

if [[ -n $OUT ]]; then
  printf '%s\n' "$ROOT_PW" > "$OUT/root.password"
  printf '%s\n' "$MASTER_PW" > "$OUT/etcron-master.password"
  printf '%s\n' "$WORKER_PW" > "$OUT/etcron-worker.password"
  chmod 0600 "$OUT"/*.password
  echo "auth enabled. Passwords in $OUT: root.password etcron-master.password etcron-worker.password"
else
  echo "auth enabled. Passwords (shown once):"
  echo "  root:          $ROOT_PW"
  echo "  etcron-master: $MASTER_PW"
  echo "  etcron-worker: $WORKER_PW"
fi
