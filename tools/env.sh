# Shared by tools/setup.sh and tools/test.sh: make (or reuse) the project's
# virtual environment in .venv, install gguf-mtp into it, and build the patched
# runtime (cached by the hash of the patch series and CMAKE_ARGS: seconds when
# nothing changed). Source it from the repository root.
set -euo pipefail
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv" >&2
    "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.gguf-mtp-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "==> installing gguf-mtp and its dependencies" >&2
    python -m pip install -q --disable-pip-version-check --upgrade pip
    python -m pip install -q --disable-pip-version-check -e '.[test]'
    touch "$stamp"
fi
echo "==> patched runtime (llama-cpp-python 0.3.36 + patches/)" >&2
gguf-mtp runtime build >/dev/null
