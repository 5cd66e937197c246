#!/usr/bin/env bash
# Install KenLM's `lmplz` and `build_binary` into tools/bin/ (ESPnet tools/installers style).
#
# `pip install kenlm` only gives the Python query module, not the estimation tools, so we build
# them from the kenlm source distribution on PyPI (the same code, pinned by its version) with
# cmake and Debian's Boost. Re-running is a no-op once both binaries exist.
#
# usage: tools/install_kenlm.sh    env: PYTHON (default .venv/bin/python, else python3), KENLM_VERSION, JOBS
set -euo pipefail

tools=$(cd "$(dirname "$0")" && pwd)
bin=$tools/bin
src=$tools/kenlm
if [ -x "$bin/lmplz" ] && [ -x "$bin/build_binary" ]; then
    echo "install_kenlm: $bin/lmplz and $bin/build_binary already present"
    exit 0
fi

root=$(dirname "$tools")
python=${PYTHON:-$( [ -x "$root/.venv/bin/python" ] && echo "$root/.venv/bin/python" || echo python3 )}
version=${KENLM_VERSION:-0.3.0}
jobs=${JOBS:-$(nproc)}

# Build dependencies; only call apt-get for what is missing, and only as root (or via sudo).
pkgs="build-essential cmake libboost-program-options-dev libboost-system-dev libboost-thread-dev
      libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if ! command -v apt-get >/dev/null; then
        echo "install_kenlm: missing build dependencies:$missing (no apt-get here; install them yourself)" >&2
        exit 1
    fi
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    mkdir -p "$src"
    echo "install_kenlm: apt-get install$missing (log: $src/apt.log)"
    { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q \
        --no-install-recommends $missing; } >"$src/apt.log" 2>&1 || { tail -n 30 "$src/apt.log" >&2; exit 1; }
fi

mkdir -p "$src" "$bin"
tarball=$(ls "$src"/kenlm-"$version".tar.gz 2>/dev/null || true)
if [ -z "$tarball" ]; then
    # --no-binary kenlm, not :all:, so that pip's metadata step takes setuptools/cmake as wheels
    # instead of compiling CMake from source.
    "$python" -m pip download --quiet --no-binary kenlm --no-deps --dest "$src" "kenlm==$version"
    tarball=$src/kenlm-$version.tar.gz
fi
rm -rf "$src/kenlm-$version"
tar -xzf "$tarball" -C "$src"

build=$src/kenlm-$version/build
cmake -S "$src/kenlm-$version" -B "$build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 \
    -DCOMPILE_TESTS=OFF >"$src/cmake.log" 2>&1 || { tail -n 30 "$src/cmake.log" >&2; exit 1; }
cmake --build "$build" --target lmplz build_binary -j "$jobs" >"$src/build.log" 2>&1 \
    || { tail -n 30 "$src/build.log" >&2; exit 1; }
install -m 755 "$build/bin/lmplz" "$build/bin/build_binary" "$bin/"
echo "install_kenlm: installed $bin/lmplz and $bin/build_binary (kenlm $version)"
