#!/usr/bin/env bash
# W1 and W2 for etcron and every peer, back to back on this machine, then the plot.
# One command for the whole comparison in docs/benchmarks.md ("Peers"):
#     bench/side_by_side.sh            (or: make bench-peers)
# Sets up the peers' venvs first (bench/peers/setup.sh). About 15 minutes; run it
# alone: every step competes for the same cores. Results go to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-10,100}              # the peers
ETCRON_JOBS=${ETCRON_JOBS:-10,100,300}
W1="--jobs $JOBS --duration 30 --warmup 5"
R=bench/results
P=bench/.peers-venv/bin/python
P4=bench/.peers4-venv/bin/python

bash bench/peers/setup.sh
step() { echo "== $(date -u +%H:%M:%S) $*" >&2; }

step etcron W1;                  .venv/bin/python -m bench.w1 --jobs $ETCRON_JOBS --duration 30 --warmup 5 --out $R/w1.json
step "APScheduler 3 W1 (py)";    $P -m bench.peers.apscheduler_w1 $W1 --out $R/peers-apscheduler-w1.json
step "APScheduler 3 W1 (c)";     $P -m bench.peers.apscheduler_w1 --body c $W1 --out $R/peers-apscheduler-w1-subprocess.json
step "Celery + RedBeat W1 (py)"; $P -m bench.peers.celery_w1 $W1 --out $R/peers-celery-w1.json
step "Celery + RedBeat W1 (c)";  $P -m bench.peers.celery_w1 --body c $W1 --out $R/peers-celery-w1-subprocess.json
step "APScheduler 4 W1 (py)";    $P4 -m bench.peers.apscheduler4_w1 $W1 --out $R/peers-apscheduler4-w1.json
step etcron W2;                  .venv/bin/python -m bench.w2 --out $R/w2.json
step "Celery + RedBeat W2";      $P -m bench.peers.celery_w1 --w2 --out $R/peers-celery-w2.json
step "APScheduler 4 W2 (N=10)";  $P4 -m bench.peers.apscheduler4_w2 --out $R/peers-apscheduler4-w2.json
step plot;                       $P -m bench.plot --out docs/img/w1-lag.png
step done
