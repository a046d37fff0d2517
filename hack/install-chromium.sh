#!/usr/bin/env bash
# Installs Debian's Chromium (package `chromium`) for the map page's browser test
# (tests/integration/test_secure.py drives it headless through Playwright). Idempotent:
# nothing to do when /usr/bin/chromium exists.
set -euo pipefail

log() { echo "install-chromium: $*" >&2; }

[[ -x /usr/bin/chromium ]] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  log "no apt-get here: install Chromium so that /usr/bin/chromium exists, then re-run"
  exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { log "needs root (or sudo) to apt-get install chromium"; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
log "apt-get install chromium (once)"
if ! "${sudo[@]}" apt-get install -y -q chromium >/dev/null; then
  log "apt-get install failed; refreshing the package lists and trying again"
  "${sudo[@]}" apt-get update -q >/dev/null
  "${sudo[@]}" apt-get install -y -q chromium >/dev/null
fi
/usr/bin/chromium --version >&2
