#!/usr/bin/env bash
# Builds (once) Kueue, the `kueue-tas` peer of benchmarks/kwok_placement.py, with
# `go install sigs.k8s.io/kueue/cmd/kueue@VERSION` (Kueue's go.mod has no replace
# directives, so the published module builds as it is), and copies Kueue's own CRDs and
# webhook manifests out of that same module next to the binary. Not part of `make test`.
#
# Idempotent: what is already in the cache folder is never rebuilt. Prints the binary's
# path on its last line (its folder also holds crd/, webhook/, manager/ and VERSION). Environment:
#   PHALANX_KUEUE_VERSION   the module version (default v0.17.0)
#   PHALANX_KUEUE_DIR       where it goes (default ~/.cache/phalanx/kueue/<version>)
set -euo pipefail

VERSION=${PHALANX_KUEUE_VERSION:-v0.17.0}
MODULE=sigs.k8s.io/kueue
DIR=${PHALANX_KUEUE_DIR:-$HOME/.cache/phalanx/kueue/$VERSION}
log() { echo "build-kueue: $*" >&2; }

have_manifests() { [[ -f "$DIR/crd/kustomization.yaml" && -f "$DIR/webhook/kustomization.yaml" \
                      && -f "$DIR/manager/controller_manager_config.yaml" ]]; }
if [[ -x "$DIR/kueue" ]] && have_manifests; then
  log "present in $DIR"
  echo "$DIR/kueue"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  log "Go is not installed, and Kueue $VERSION is missing from $DIR"
  log "Install Go >= 1.26, or point PHALANX_KUEUE_DIR at a folder holding kueue, crd/, webhook/ and manager/."
  exit 1
fi

start=$(date +%s)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$DIR"
if [[ ! -x "$DIR/kueue" ]]; then
  log "go install $MODULE/cmd/kueue@$VERSION (first build: ~7 min on 2 cores)"
  # Run outside any module: go install resolves Kueue's own go.mod and go.sum.
  (cd "$tmp" && GOBIN="$tmp/bin" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath" \
    nice -n 10 go install -ldflags "-s -w" "$MODULE/cmd/kueue@$VERSION")
  mv "$tmp/bin/kueue" "$DIR/kueue"
fi
# The module go install used is in the module cache; its manifests sit beside its code:
# the CRDs with the kustomize patches that give some of them a conversion webhook, the
# webhook configurations with theirs, and the manager's shipped Configuration.
src=$(cd "$tmp" && go mod download -json "$MODULE@$VERSION" | awk -F'"' '$2 == "Dir" {print $4}')
for part in crd webhook manager; do
  [[ -f "$src/config/components/$part/kustomization.yaml" ]] || {
    log "no config/components/$part/kustomization.yaml in $src"; exit 1; }
  rm -rf "$DIR/$part.tmp" && cp -r "$src/config/components/$part" "$DIR/$part.tmp"
  chmod -R u+w "$DIR/$part.tmp"
  rm -rf "$DIR/$part" && mv "$DIR/$part.tmp" "$DIR/$part"
done
echo "$MODULE $VERSION" > "$DIR/VERSION"
log "ready in $DIR after $(( $(date +%s) - start ))s"
echo "$DIR/kueue"
