#!/usr/bin/env bash
# Builds (once) helm from its Go module, for the chart test (tests/unit/test_chart.py)
# and `make manifests`, which renders manifests/ from charts/phalanx.
#
# Idempotent: prints the binary's path on its last line; a binary already built is never
# rebuilt. PHALANX_HELM_BINARY=/path uses a helm you already have (v4, or v3 >= 3.14).
set -euo pipefail

HELM_VERSION=v4.3.2  # helm.sh/helm/v4, as the Go module proxy serves it
log() { echo "build-helm: $*" >&2; }

if [[ -n "${PHALANX_HELM_BINARY:-}" ]]; then
  [[ -x "$PHALANX_HELM_BINARY" ]] || { log "$PHALANX_HELM_BINARY is not executable"; exit 1; }
  echo "$PHALANX_HELM_BINARY"
  exit 0
fi

BIN_DIR=${PHALANX_HELM_DIR:-$HOME/.cache/phalanx/helm/$HELM_VERSION}
binary="$BIN_DIR/helm"
if [[ -x "$binary" ]]; then
  echo "$binary"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  log "Go is not installed and $binary is missing: install Go >= 1.26 or set PHALANX_HELM_BINARY"
  exit 1
fi
mkdir -p "$BIN_DIR"
start=$(date +%s)
log "building helm $HELM_VERSION from helm.sh/helm/v4 (once; a few minutes on 2 cores)"
GOBIN="$BIN_DIR/.tmp" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath" \
  go install -ldflags "-s -w" "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
mv "$BIN_DIR/.tmp/helm" "$binary"
rmdir "$BIN_DIR/.tmp"
log "built $binary in $(( $(date +%s) - start ))s"
echo "$binary"
