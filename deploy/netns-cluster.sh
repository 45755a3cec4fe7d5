#!/usr/bin/env bash
# A 3-member etcd, 2 masters and 3 workers, each in its own network namespace
# (198.18.0.0/15 addresses), TLS and etcd auth on. Needs root; see deploy/netns_cluster.py.
#   deploy/netns-cluster.sh up|status|down [--dir DIR]
#   deploy/netns-cluster.sh link-down|link-up HOST      # e.g. worker1: cut it off
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${ETCRON_PYTHON:-$here/.venv/bin/python}
exec "$py" "$here/deploy/netns_cluster.py" "$@"
