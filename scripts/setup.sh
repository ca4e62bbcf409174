#!/usr/bin/env bash
# Create .venv and install mmgen with the pinned, verified versions. Safe to run again:
# it does nothing when pyproject.toml and constraints.txt have not changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.mmgen-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import mmgen, torch, torchvision" 2>/dev/null; then
    exit 0
fi
echo "installing mmgen and its pinned dependencies into .venv (first run: a few minutes) ..."
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
# torch/torchvision come as the matching CUDA-built pair: it imports and runs on CPU-only machines,
# unlike the CPU torch wheel paired with the registry's (CUDA) torchvision.
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
.venv/bin/python -c "import torch, torchvision, mmgen; print('mmgen', mmgen.__version__, '| torch', torch.__version__, '| torchvision', torchvision.__version__)"
echo "$want" > "$stamp"
