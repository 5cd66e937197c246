#!/usr/bin/env bash
# Install espeak-ng (Debian's package): the espeak recipe, the synthetic-voice digits data and their
# tests use it. Re-running is a no-op once it is on PATH.   usage: tools/install_espeak.sh
set -euo pipefail
command -v espeak-ng >/dev/null && exit 0
if ! command -v apt-get >/dev/null; then
    echo "install_espeak: espeak-ng is missing and there is no apt-get here; install it yourself" >&2
    exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
log=$(mktemp /tmp/install_espeak.XXXXXX.log)
echo "install_espeak: apt-get install espeak-ng (log: $log)"
{ $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
    espeak-ng; } >"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
