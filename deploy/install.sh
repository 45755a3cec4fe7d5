#!/usr/bin/env bash
# Install etcron on a host: a dedicated `etcron` user, a virtualenv in
# /opt/etcron/venv from a wheel built from this repository, the systemd units,
# and a configuration skeleton in /etc/etcron with safe permissions.
#
#   sudo deploy/install.sh [--run-as] [--wheel FILE] [--python PYTHON] [--root DIR]
#   sudo deploy/install.sh --uninstall [--purge] [--root DIR]
#
#   --run-as      also install the worker drop-in that lets jobs run as other
#                 users (deploy/systemd/etcron-worker-run-as.conf: read it first)
#   --wheel FILE  install this wheel instead of building one from the repository
#   --python PY   the interpreter for the virtualenv (default python3; >= 3.11)
#   --root DIR    install into DIR as if it were / (packaging, tests): users go
#                 into DIR/etc/passwd, and systemctl is not called
#   --uninstall   stop and remove the units, the virtualenv and the user; the
#                 configuration and secrets in /etc/etcron stay unless --purge
#
# Idempotent: a second run with the same inputs changes nothing (files are
# rewritten only when their content differs; the virtualenv is reinstalled only
# when the wheel's contents differ). The configuration is written only when it
# does not exist: edit it, and the installer never overwrites it.
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
ROOT=/
PYTHON=python3
WHEEL=""
RUN_AS=0
UNINSTALL=0
PURGE=0

die() { echo "install.sh: $*" >&2; exit 2; }
say() { echo "install.sh: $*"; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
    --python) PYTHON=${2:?--python needs an interpreter}; shift 2 ;;
    --wheel) WHEEL=${2:?--wheel needs a file}; shift 2 ;;
    --run-as) RUN_AS=1; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[[ $(id -u) -eq 0 ]] || die "run as root (it creates a user and writes /etc and /opt)"
[[ -d $ROOT ]] || die "--root $ROOT is not a directory"
ROOT=$(cd "$ROOT" && pwd)
R=${ROOT%/}   # "" for the real root: every path below is "$R/..."
[[ $PURGE -eq 0 || $UNINSTALL -eq 1 ]] || die "--purge goes with --uninstall"

OPT=$R/opt/etcron
ETC=$R/etc/etcron
UNITS=$R/etc/systemd/system
DROPIN=$UNITS/etcron-worker.service.d
USERNAME=etcron

live_systemd() { [[ -z $R && -d /run/systemd/system ]]; }

# useradd/userdel in DIR with --prefix (shadow >= 4.9), else on this host.
prefix_args=()
[[ -z $R ]] || prefix_args=(--prefix "$R")

user_exists() { grep -q "^$USERNAME:" "$R/etc/passwd" 2>/dev/null; }
uid_of() { awk -F: -v u="$USERNAME" '$1 == u { print $3 }' "$R/etc/passwd"; }
gid_of() { awk -F: -v g="$USERNAME" '$1 == g { print $3 }' "$R/etc/group"; }

# put SRC DEST MODE OWNER:GROUP: copy only when the content differs; then set
# mode and owner only when they differ (so a second run touches nothing).
changed=0
put() {
  local src=$1 dest=$2 mode=$3 owner=$4
  if [[ ! -f $dest ]] || ! cmp -s "$src" "$dest"; then
    install -m "$mode" "$src" "$dest.etcron-new"
    mv -f "$dest.etcron-new" "$dest"
    say "wrote ${dest#"$R"}"
    changed=1
  fi
  fix "$dest" "$mode" "$owner"
}
# fix PATH MODE UID:GID: chmod/chown only what differs.
fix() {
  local path=$1 mode=$2 owner=$3
  [[ $(stat -c %a "$path") == "${mode#0}" ]] || chmod "$mode" "$path"
  [[ $(stat -c %u:%g "$path") == "$owner" ]] || chown "$owner" "$path"
}
dir() { # PATH MODE UID:GID
  [[ -d $1 ]] || { mkdir -p "$1"; say "created ${1#"$R"}/"; }
  fix "$1" "$2" "$3"
}

uninstall() {
  if live_systemd; then
    systemctl disable --now etcron-master.service etcron-worker.service 2>/dev/null || true
  fi
  local f
  for f in "$UNITS/etcron-master.service" "$UNITS/etcron-worker.service" "$DROPIN/run-as.conf"; do
    [[ ! -e $f ]] || { rm -f "$f"; say "removed ${f#"$R"}"; }
  done
  [[ ! -d $DROPIN ]] || rmdir --ignore-fail-on-non-empty "$DROPIN"
  live_systemd && systemctl daemon-reload
  [[ ! -d $OPT ]] || { rm -rf "$OPT"; say "removed ${OPT#"$R"}"; }
  if [[ $PURGE -eq 1 && -d $ETC ]]; then
    rm -rf "$ETC"; say "removed ${ETC#"$R"} (configuration and secrets)"
  elif [[ -d $ETC ]]; then
    say "kept ${ETC#"$R"} (configuration and secrets; --purge removes them)"
  fi
  if user_exists; then
    userdel "${prefix_args[@]}" "$USERNAME"; say "removed user $USERNAME"
  fi
  # what systemd made for the units (StateDirectory=, LogsDirectory=)
  if [[ $PURGE -eq 1 ]]; then
    for f in "$R/var/lib/etcron" "$R/var/log/etcron"; do
      [[ ! -d $f ]] || { rm -rf "$f"; say "removed ${f#"$R"}"; }
    done
  fi
}

if [[ $UNINSTALL -eq 1 ]]; then
  uninstall
  exit 0
fi

# --- the user -----------------------------------------------------------------
if ! user_exists; then
  useradd "${prefix_args[@]}" --system --user-group --home-dir /var/lib/etcron \
    --no-create-home --shell /usr/sbin/nologin "$USERNAME"
  say "created user $USERNAME"
fi
RG="0:$(gid_of)"

# --- the virtualenv from a wheel ----------------------------------------------
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$PYTHON is older than Python 3.11"
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
  || die "$PYTHON cannot make a virtualenv (Debian: apt install python3-venv)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [[ -z $WHEEL ]]; then
  say "building the wheel from $REPO"
  "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$tmp/wheel" "$REPO" >/dev/null
  WHEEL=$(echo "$tmp"/wheel/etcron-*.whl)
fi
[[ -f $WHEEL ]] || die "no wheel at $WHEEL"
# The wheel's RECORD lists a hash of every file it holds: same RECORD, same code
# (the wheel file itself differs from build to build by its timestamps).
stamp=$("$PYTHON" - "$WHEEL" <<'PY'
import hashlib, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    [record] = [n for n in z.namelist() if n.endswith(".dist-info/RECORD")]
    print(hashlib.sha256(z.read(record)).hexdigest())
PY
)
dir "$OPT" 0755 0:0
if [[ ! -x $OPT/venv/bin/python ]]; then
  "$PYTHON" -m venv "$OPT/venv"
  say "created ${OPT#"$R"}/venv"
fi
if [[ $(cat "$OPT/venv/.etcron-wheel" 2>/dev/null) != "$stamp" ]]; then
  "$OPT/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$WHEEL"
  "$OPT/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --force-reinstall --no-deps "$WHEEL"
  echo "$stamp" > "$OPT/venv/.etcron-wheel"
  say "installed $(basename "$WHEEL") into ${OPT#"$R"}/venv"
  changed=1
fi

# --- configuration and secrets ------------------------------------------------
dir "$R/etc" 0755 0:0
dir "$ETC" 0750 "$RG"
dir "$ETC/credentials" 0700 0:0
if [[ ! -e $ETC/config.yaml ]]; then
  cat > "$tmp/config.yaml" <<'YAML'
# etcron on this host (config.example.yaml in the repository documents every
# setting). The units add what differs by role: the etcd user, the client
# certificate, and the secrets (from /etc/etcron/credentials via LoadCredential=).
etcd:
  endpoints: ["etcd1.example.net:2379", "etcd2.example.net:2379", "etcd3.example.net:2379"]
  prefix: /cron
  ca_file: /etc/etcron/ca.crt
master:
  # Loopback by default; to serve other hosts, give the API TLS (or a TLS proxy).
  listen: 127.0.0.1:8070
worker:
  labels: {}
  log_dir: /var/log/etcron
YAML
  put "$tmp/config.yaml" "$ETC/config.yaml" 0640 "$RG"
else
  fix "$ETC/config.yaml" 0640 "$RG"
fi
# Secrets: root-only; systemd hands them to the services (LoadCredential=).
for f in "$ETC"/credentials/*; do
  [[ ! -f $f ]] || fix "$f" 0600 0:0
done

# --- units --------------------------------------------------------------------
dir "$R/etc/systemd" 0755 0:0
dir "$UNITS" 0755 0:0
put "$HERE/systemd/etcron-master.service" "$UNITS/etcron-master.service" 0644 0:0
put "$HERE/systemd/etcron-worker.service" "$UNITS/etcron-worker.service" 0644 0:0
if [[ $RUN_AS -eq 1 ]]; then
  dir "$DROPIN" 0755 0:0
  put "$HERE/systemd/etcron-worker-run-as.conf" "$DROPIN/run-as.conf" 0644 0:0
fi
if [[ $changed -eq 1 ]] && live_systemd; then
  systemctl daemon-reload
fi

if [[ $changed -eq 0 ]]; then
  say "nothing to change"
else
  say "done. Next (docs/deploy.md): put ca.crt and <role>.crt in ${ETC#"$R"}/, the secrets in"
  say "  ${ETC#"$R"}/credentials/ (master-etcd-password, master.key, api-token, worker-etcd-password,"
  say "  worker.key; mode 0600), edit ${ETC#"$R"}/config.yaml, then:"
  say "  systemctl enable --now etcron-worker    (and/or etcron-master)"
fi
