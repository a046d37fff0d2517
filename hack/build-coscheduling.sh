#!/usr/bin/env bash
# Builds (once) scheduler-plugins' kube-scheduler (cmd/scheduler, with the Coscheduling
# plugin) from its published Go module, the `coscheduling` peer of
# benchmarks/kwok_placement.py, and copies the module's own PodGroup CRD
# (manifests/coscheduling/crd.yaml, scheduling.x-k8s.io/v1alpha1) next to it.
# Not part of `make test`: the benchmark runs it when that peer is asked for.
#
# hack/coscheduling/go.mod pins sigs.k8s.io/scheduler-plugins v0.34.1-devel and repeats
# its replace block (the Kubernetes 1.34.1 staging modules), which Go applies only in the
# main module. Idempotent: the cache folder's name carries a hash of go.mod and go.sum,
# and what is there is never rebuilt. Prints the folder (holding `scheduler`, `crd.yaml`,
# `VERSION`) on its last line; the first build takes ~10 min on 2 cores.
# PHALANX_COSCHEDULING_DIR=/folder uses a folder you already have with those files.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mod="$here/coscheduling"
log() { echo "build-coscheduling: $*" >&2; }

MODULE=sigs.k8s.io/scheduler-plugins
VERSION=$(awk -v m="$MODULE" '$1 == "require" && $2 == m {print $3}' "$mod/go.mod")
hash=$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -c1-12)
DIR=${PHALANX_COSCHEDULING_DIR:-$HOME/.cache/phalanx/coscheduling/scheduler-plugins-$VERSION-$hash}

if [[ -x "$DIR/scheduler" && -f "$DIR/crd.yaml" ]]; then
  log "present in $DIR"
  echo "$DIR"
  exit 0
fi
if [[ -n "${PHALANX_COSCHEDULING_DIR:-}" ]]; then
  log "$DIR has no executable scheduler and crd.yaml"
  exit 1
fi
if ! command -v go >/dev/null 2>&1; then
  log "Go is not installed and $DIR is missing: install Go >= 1.26 or set PHALANX_COSCHEDULING_DIR"
  exit 1
fi

export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath"
start=$(date +%s)
log "building $MODULE $VERSION cmd/scheduler (first build: ~10 min on 2 cores)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$mod" && go build -ldflags "-s -w" -o "$tmp/scheduler" "$MODULE/cmd/scheduler")
src=$(cd "$mod" && go list -m -f '{{.Dir}}' "$MODULE")
cp "$src/manifests/coscheduling/crd.yaml" "$tmp/crd.yaml"
chmod u+w "$tmp/crd.yaml"
echo "$MODULE $VERSION (k8s.io/kubernetes $(cd "$mod" && go list -m -f '{{.Replace.Version}}' k8s.io/kubernetes))" > "$tmp/VERSION"
mkdir -p "$(dirname "$DIR")"
rm -rf "$DIR" && mv "$tmp" "$DIR"
trap - EXIT
log "built $DIR in $(( $(date +%s) - start ))s"
echo "$DIR"
