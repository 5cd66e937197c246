#!/usr/bin/env bash
# Install Debian packages the tests need, each only when its command is missing from PATH:
# espeak-ng (synthetic speech for the espeak recipe and its tests) and chromium (the `asr serve`
# page, driven headless over the DevTools protocol; no browser is downloaded at test time).
#   usage: tools/install_apt.sh PACKAGE...   (the command is named like the package)
set -euo pipefail
missing=""
for p in "$@"; do command -v "$p" >/dev/null || missing="$missing $p"; done
[ -n "$missing" ] || exit 0
if ! command -v apt-get >/dev/null; then
    echo "install_apt:$missing missing and there is no apt-get here; install them yourself" >&2
    exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
log=$(mktemp /tmp/install_apt.XXXXXX.log)
echo "install_apt: apt-get install$missing (log: $log)"
{ $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
    $missing; } >"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
