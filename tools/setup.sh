#!/usr/bin/env bash
# One command on a fresh machine: virtual environment, install, patched runtime
# build, then the demo on the embedded default model.
#   CMAKE_ARGS="-DGGML_CUDA=on" tools/setup.sh    # the same with CUDA
cd "$(dirname "$0")/.."
. tools/env.sh
gguf-mtp runtime info
echo "==> gguf-mtp demo" >&2
exec gguf-mtp demo "$@"
