#!/usr/bin/env bash
# Builds (once) the workload controllers localcluster can run next to the control plane:
# JobSet, LeaderWorkerSet and the Kubeflow training-operator, from their published Go
# modules (hack/controllers/go.mod pins the versions), and copies each one's own CRDs
# and webhook manifests out of its module next to the binary.
#
# Usage: build-controllers.sh [jobset] [lws] [training-operator]   (default: all three)
# Idempotent: what is already in the cache folder is never rebuilt. Prints the folder on
# its last line. Environment:
#   PHALANX_CONTROLLERS_DIR   where they go (default ~/.cache/phalanx/controllers/<versions>)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mod="$here/controllers"
version() { awk -v m="$1" '$1 == m {print $2}' "$mod/go.mod"; }
JOBSET=$(version sigs.k8s.io/jobset)
LWS=$(version sigs.k8s.io/lws)
TRAINING=$(version github.com/kubeflow/training-operator)
DIR=${PHALANX_CONTROLLERS_DIR:-$HOME/.cache/phalanx/controllers/jobset-$JOBSET-lws-$LWS-training-operator-$TRAINING}

log() { echo "build-controllers: $*" >&2; }

# name -> Go package, module, the module's CRD folder, its webhook kustomization folder
declare -A PACKAGE=([jobset]=sigs.k8s.io/jobset [lws]=sigs.k8s.io/lws/cmd
                    [training-operator]=github.com/kubeflow/training-operator/cmd/training-operator.v1)
declare -A MODULE=([jobset]=sigs.k8s.io/jobset [lws]=sigs.k8s.io/lws
                   [training-operator]=github.com/kubeflow/training-operator)
declare -A CRDS=([jobset]=config/components/crd/bases [lws]=config/crd/bases
                 [training-operator]=manifests/base/crds)
declare -A WEBHOOK=([jobset]=config/components/webhook [lws]=config/webhook
                    [training-operator]=manifests/base/webhook)

wanted=("$@")
[[ ${#wanted[@]} -gt 0 ]] || wanted=(jobset lws training-operator)
missing=()
for name in "${wanted[@]}"; do
  [[ -n "${PACKAGE[$name]:-}" ]] || { log "unknown controller '$name' (jobset, lws, training-operator)"; exit 2; }
  [[ -x "$DIR/$name/manager" && -d "$DIR/$name/crds" ]] || missing+=("$name")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  log "all present in $DIR"
  echo "$DIR"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  log "Go is not installed, and these controllers are missing from $DIR: ${missing[*]}"
  log "Install Go >= 1.26, or point PHALANX_CONTROLLERS_DIR at a folder holding them."
  exit 1
fi

export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath"
start=$(date +%s)
pkgs=()
for name in "${missing[@]}"; do pkgs+=("${PACKAGE[$name]}"); done
log "building ${missing[*]} (first build: ~5 min on 2 cores)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$mod" && go build -ldflags "-s -w" -o "$tmp/" "${pkgs[@]}")
for name in "${missing[@]}"; do
  src=$(cd "$mod" && go list -m -f '{{.Dir}}' "${MODULE[$name]}")
  out="$DIR/$name"
  rm -rf "$out" && mkdir -p "$out/crds" "$out/webhook"
  mv "$tmp/$(basename "${PACKAGE[$name]}")" "$out/manager"
  cp "$src/${CRDS[$name]}"/*.yaml "$out/crds/"
  rm -f "$out/crds/kustomization.yaml"
  cp -r "$src/${WEBHOOK[$name]}"/. "$out/webhook/"
  chmod -R u+w "$out"
  echo "${MODULE[$name]} $(cd "$mod" && go list -m -f '{{.Version}}' "${MODULE[$name]}")" > "$out/VERSION"
done
log "built ${missing[*]} in $(( $(date +%s) - start ))s"
echo "$DIR"
