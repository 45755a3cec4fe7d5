#!/usr/bin/env bash
# Create one etcd user per role for etcron and turn authentication on.
#   ETCDCTL_ENDPOINTS=https://127.0.0.1:2379 ETCDCTL_CACERT=certs/ca.crt \
#   ETCDCTL_CERT=certs/server.crt ETCDCTL_KEY=certs/server.key \
#   deploy/etcd/setup-auth.sh /cron
# Prints the generated passwords once; store them in the password_file of each host.
set -euo pipefail
P=${1:-/cron}
ctl() { ETCDCTL_API=3 etcdctl "$@"; }
pw() { head -c 18 /dev/urandom | base64 | tr -d '/+='; }
ROOT_PW=$(pw); MASTER_PW=$(pw); WORKER_PW=$(pw)
ctl user add "root:$ROOT_PW" >/dev/null
ctl role add root >/dev/null 2>&1 || true
ctl user grant-role root root >/dev/null
# masters: everything under the prefix
ctl role add etcron-master >/dev/null
ctl role grant-permission etcron-master --prefix=true readwrite "$P/" >/dev/null
ctl user add "etcron-master:$MASTER_PW" >/dev/null
ctl user grant-role etcron-master etcron-master >/dev/null
# workers: read job definitions and kill requests; write what a run needs
ctl role add etcron-worker >/dev/null
ctl role grant-permission etcron-worker --prefix=true read "$P/jobs/" >/dev/null
ctl role grant-permission etcron-worker --prefix=true readwrite "$P/killer/" >/dev/null
ctl role grant-permission etcron-worker --prefix=true read "$P/masters/" >/dev/null
ctl role grant-permission etcron-worker read "$P/budget" >/dev/null
for d in lock ticks workers runs output trigger repairs; do
  ctl role grant-permission etcron-worker --prefix=true readwrite "$P/$d/" >/dev/null
done
ctl user add "etcron-worker:$WORKER_PW" >/dev/null
ctl user grant-role etcron-worker etcron-worker >/dev/null
ctl auth enable >/dev/null
echo "auth enabled. Passwords (shown once):"
echo "  root:          $ROOT_PW"
echo "  etcron-master: $MASTER_PW"
echo "  etcron-worker: $WORKER_PW"
