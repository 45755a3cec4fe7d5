#!/usr/bin/env bash
# Set up what the peer benchmarks need, outside the project's dependencies:
#   bench/.peers-venv   Celery + RedBeat, APScheduler 3, matplotlib (requirements.txt)
#   bench/.peers4-venv  APScheduler 4 on PostgreSQL (requirements-aps4.txt)
#   redis-server, PostgreSQL and a C compiler from Debian packages.
# Idempotent: an existing venv is brought up to the pinned versions.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
command -v cc >/dev/null || need+=(gcc libc6-dev)
if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
        # The benchmark starts its own servers; the package's services are not used.
        command -v systemctl >/dev/null && systemctl disable --now redis-server postgresql 2>/dev/null || true
    else
        echo "bench/peers/setup.sh: missing Debian packages; run: sudo apt-get install ${need[*]}" >&2
        exit 1
    fi
fi

py=${PYTHON:-python3}
for spec in ".peers-venv:requirements.txt" ".peers4-venv:requirements-aps4.txt"; do
    venv=bench/${spec%%:*}
    req=bench/peers/${spec#*:}
    [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
done
echo "peers ready: bench/.peers-venv, bench/.peers4-venv"
