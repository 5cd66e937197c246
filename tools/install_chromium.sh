#!/usr/bin/env bash
# Install Chromium (Debian's package): the web page test of `asr serve` drives it headless over the
# DevTools protocol, with its fake microphone. No browser is downloaded at test time. Re-running is
# a no-op once it is on PATH.   usage: tools/install_chromium.sh
set -euo pipefail
command -v chromium >/dev/null && exit 0
if ! command -v apt-get >/dev/null; then
    echo "install_chromium: chromium is missing and there is no apt-get here; install it yourself" >&2
    exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
log=$(mktemp /tmp/install_chromium.XXXXXX.log)
echo "install_chromium: apt-get install chromium (log: $log)"
{ $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
    chromium; } >"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
