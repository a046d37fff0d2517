#!/usr/bin/env bash
# Builds (once) bindref, the client-go reference binder benchmarks/bind_throughput.py
# measures Phalanx's binder against (hack/bindref). Not part of `make test`.
#
# Idempotent: a binary built from the current sources is never rebuilt (the cache file
# name carries a hash of go.mod, go.sum and main.go). Prints the binary's path on its
# last line. PHALANX_BINDREF_BINARY=/path uses a binary you already have.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { echo "build-bindref: $*" >&2; }

if [[ -n "${PHALANX_BINDREF_BINARY:-}" ]]; then
  [[ -x "$PHALANX_BINDREF_BINARY" ]] || { log "$PHALANX_BINDREF_BINARY is not executable"; exit 1; }
  echo "$PHALANX_BINDREF_BINARY"
  exit 0
fi

K8S_VERSION=$(awk '/^require k8s.io\/kubernetes /{print $3}' "$here/k8s/go.mod")
hash=$(cat "$here/bindref/go.mod" "$here/bindref/go.sum" "$here/bindref/main.go" | sha256sum | cut -c1-12)
BIN_DIR=${PHALANX_BIN_DIR:-$HOME/.cache/phalanx/bin/$K8S_VERSION}
binary="$BIN_DIR/bindref-$hash"

if [[ -x "$binary" ]]; then
  echo "$binary"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  log "Go is not installed and $binary is missing: install Go >= 1.26 or set PHALANX_BINDREF_BINARY"
  exit 1
fi
mkdir -p "$BIN_DIR"
start=$(date +%s)
log "building bindref (client-go from hack/bindref/go.mod)"
(cd "$here/bindref" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$binary.tmp" .)
mv "$binary.tmp" "$binary"
log "built $binary in $(( $(date +%s) - start ))s"
echo "$binary"
