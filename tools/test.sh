#!/usr/bin/env bash
# The test suite, from a fresh clone or an existing checkout (sets up what is missing).
cd "$(dirname "$0")/.."
. tools/env.sh
echo "==> real models for the tests (SmolLM2-135M Q4_1, Gemma 3 270M Q4_K_M; cached)" >&2
gguf-mtp models fetch all >/dev/null
echo "==> stock llama.cpp of the pinned version, unpatched (the tests check what it loads; cached)" >&2
python -m gguf_mtp.bench.upstream_mtp build >/dev/null
exec python -m pytest -q "$@"
