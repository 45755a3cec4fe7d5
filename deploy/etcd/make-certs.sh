#!/usr/bin/env bash
# Make a private CA, an etcd server certificate and client certificates for
# etcron masters and workers, in DIR (default ./certs). Requires openssl.
#   deploy/etcd/make-certs.sh DIR [SERVER_NAMES]   e.g. "etcd1.example.net,10.0.0.5"
set -euo pipefail
DIR=${1:-certs}
NAMES=${2:-localhost,127.0.0.1}
mkdir -p "$DIR" && cd "$DIR"
san=""
IFS=, read -ra parts <<< "$NAMES"
for n in "${parts[@]}"; do
  if [[ $n =~ ^[0-9.]+$ ]]; then san+="IP:$n,"; else san+="DNS:$n,"; fi
done
san=${san%,}
openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=etcron-ca" \
  -keyout ca.key -out ca.crt 2>/dev/null
issue() { # name subject extfile-lines
  local name=$1 cn=$2 ext=$3
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn" -keyout "$name.key" -out "$name.csr" 2>/dev/null
  printf '%b\n' "$ext" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
    -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}
issue server etcd "subjectAltName=$san\nextendedKeyUsage=serverAuth,clientAuth"
issue master etcron-master "extendedKeyUsage=clientAuth"
issue worker etcron-worker "extendedKeyUsage=clientAuth"
chmod 600 ./*.key
echo "certificates in $PWD: ca.crt server.{crt,key} master.{crt,key} worker.{crt,key}"
