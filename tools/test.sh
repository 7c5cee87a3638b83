#!/usr/bin/env bash
# The test suite, from a fresh clone or an existing checkout (sets up what is missing).
cd "$(dirname "$0")/.."
. tools/env.sh
exec python -m pytest -q "$@"
