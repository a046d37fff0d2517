#!/usr/bin/env bash
# Builds (once) the local control plane Phalanx tests against: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, kwok and kwokctl, from Go modules.
#
# Idempotent: a binary already in the cache folder is never rebuilt. Prints the
# folder on its last line. Environment:
#   PHALANX_BIN_DIR             where the binaries go (default ~/.cache/phalanx/bin/<k8s version>)
#   PHALANX_<NAME>_BINARY       use a binary you already have instead of building it, e.g.
#                               PHALANX_KUBE_APISERVER_BINARY=/usr/local/bin/kube-apiserver
#                               (NAME: ETCD KUBE_APISERVER KUBE_CONTROLLER_MANAGER
#                                KUBE_SCHEDULER KUBECTL KWOK KWOKCTL)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K8S_VERSION=$(awk '/^require k8s.io\/kubernetes /{print $3}' "$here/k8s/go.mod")
ETCD_VERSION=$(awk '/^require go.etcd.io\/etcd\/server\/v3 /{print $3}' "$here/etcd/go.mod")
KWOK_VERSION=v0.8.0
BIN_DIR=${PHALANX_BIN_DIR:-$HOME/.cache/phalanx/bin/$K8S_VERSION}
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kwokctl)

log() { echo "build-controlplane: $*" >&2; }

override_var() { # kube-apiserver -> PHALANX_KUBE_APISERVER_BINARY
  local up=${1^^}
  echo "PHALANX_${up//-/_}_BINARY"
}

mkdir -p "$BIN_DIR"

missing=()
for name in "${BINARIES[@]}"; do
  var=$(override_var "$name")
  if [[ -n "${!var:-}" ]]; then
    [[ -x "${!var}" ]] || { log "$var=${!var} is not an executable file"; exit 1; }
    ln -sf "$(readlink -f "${!var}")" "$BIN_DIR/$name"
  elif [[ ! -x "$BIN_DIR/$name" ]]; then
    missing+=("$name")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  log "all binaries present in $BIN_DIR"
  echo "$BIN_DIR"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  log "Go is not installed, and these binaries are missing from $BIN_DIR: ${missing[*]}"
  log "Install Go >= 1.26 (https://go.dev/doc/install), or point at binaries you already have"
  log "with PHALANX_BIN_DIR=<folder holding them> or PHALANX_<NAME>_BINARY=<path> (see this script's header)."
  exit 1
fi

export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath"
want() { [[ " ${missing[*]} " == *" $1 "* ]]; }
start=$(date +%s)

k8s_pkgs=()
for name in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  want "$name" && k8s_pkgs+=("k8s.io/kubernetes/cmd/$name")
done
if [[ ${#k8s_pkgs[@]} -gt 0 ]]; then
  minor=${K8S_VERSION#v}; major=${minor%%.*}; minor=${minor#*.}; minor=${minor%%.*}
  build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done
  log "building ${k8s_pkgs[*]##*/} at $K8S_VERSION (first build: ~15-25 min on 2 cores)"
  (cd "$here/k8s" && go build -ldflags "$ldflags" -o "$BIN_DIR/" "${k8s_pkgs[@]}")
fi

if want etcd; then
  log "building etcd $ETCD_VERSION"
  (cd "$here/etcd" && go build -ldflags "-s -w" -o "$BIN_DIR/etcd" go.etcd.io/etcd/server/v3)
fi

for name in kwok kwokctl; do
  if want "$name"; then
    log "building $name $KWOK_VERSION"
    GOBIN="$BIN_DIR" go install -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
      "sigs.k8s.io/kwok/cmd/$name@$KWOK_VERSION"
  fi
done

for name in "${BINARIES[@]}"; do
  [[ -x "$BIN_DIR/$name" ]] || { log "$name was not produced in $BIN_DIR"; exit 1; }
done
log "built ${missing[*]} in $(( $(date +%s) - start ))s"
echo "$BIN_DIR"
