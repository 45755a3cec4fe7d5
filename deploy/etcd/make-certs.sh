#!/usr/bin/env bash
# Make a private CA, an etcd server certificate and client certificates for
# etcron masters and workers. Requires openssl.
#   deploy/etcd/make-certs.sh DIR [SERVER_NAMES] [CA_DIR]
#   e.g. deploy/etcd/make-certs.sh certs "etcd1.example.net,10.0.0.5,2001:db8::5"
#
# DIR (default ./certs) receives only what is distributed to hosts: ca.crt,
# server.{crt,key}, master.{crt,key}, worker.{crt,key}.
# The CA's private key stays in CA_DIR (default DIR.ca, beside DIR, never
# inside it): ca.key mode 0600 in a 0700 directory. Keep CA_DIR offline; an
# existing CA_DIR/ca.key is reused, so running again issues new certificates
# under the same CA.
# SERVER_NAMES: comma-separated host names and addresses of the etcd members;
# IPv4 and IPv6 addresses (with or without [brackets]) become IP SANs.
set -euo pipefail
umask 077
DIR=${1:-certs}
NAMES=${2:-localhost,127.0.0.1,::1}
CA_DIR=${3:-${DIR%/}.ca}

DIR=$(realpath -m "$DIR")
CA_DIR=$(realpath -m "$CA_DIR")
case "$CA_DIR/" in
  "$DIR"/*) echo "make-certs.sh: CA_DIR ($CA_DIR) must not be inside DIR ($DIR)" >&2; exit 2 ;;
esac
mkdir -p "$DIR" "$CA_DIR"
chmod 0755 "$DIR"
chmod 0700 "$CA_DIR"

san=""
IFS=, read -ra parts <<< "$NAMES"
for n in "${parts[@]}"; do
  n=${n//[[:space:]]/}
  [[ -n $n ]] || continue
  n=${n#[}; n=${n%]}
  if [[ $n =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ || $n == *:* ]]; then
    san+="IP:$n,"
  else
    san+="DNS:$n,"
  fi
done
san=${san%,}
[[ -n $san ]] || { echo "make-certs.sh: no server names given" >&2; exit 2; }

if [[ ! -f $CA_DIR/ca.key ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=etcron-ca" \
    -keyout "$CA_DIR/ca.key" -out "$CA_DIR/ca.crt" 2>/dev/null
fi
chmod 0600 "$CA_DIR/ca.key"
install -m 0644 "$CA_DIR/ca.crt" "$DIR/ca.crt"

work=$(mktemp -d "$CA_DIR/.issue.XXXXXX")
trap 'rm -rf "$work"' EXIT

issue() { # name common-name extension-lines
  local name=$1 cn=$2 ext=$3
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn" \
    -keyout "$work/$name.key" -out "$work/$name.csr" 2>/dev/null
  printf '%b\n' "$ext" > "$work/$name.ext"
  openssl x509 -req -in "$work/$name.csr" -CA "$CA_DIR/ca.crt" -CAkey "$CA_DIR/ca.key" \
    -CAserial "$CA_DIR/ca.srl" -CAcreateserial -days 825 \
    -extfile "$work/$name.ext" -out "$work/$name.crt" 2>/dev/null
  install -m 0600 "$work/$name.key" "$DIR/$name.key"
  install -m 0644 "$work/$name.crt" "$DIR/$name.crt"
}
issue server etcd "subjectAltName=$san\nextendedKeyUsage=serverAuth,clientAuth"
issue master etcron-master "extendedKeyUsage=clientAuth"
issue worker etcron-worker "extendedKeyUsage=clientAuth"

echo "to distribute, in $DIR: ca.crt server.{crt,key} master.{crt,key} worker.{crt,key}"
echo "the CA's key (keep it offline): $CA_DIR/ca.key"
