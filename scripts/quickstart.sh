#!/usr/bin/env bash
# The main job: set up, then sample a captioned grid from the shipped VAR model and score it with the shapes judge.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/mmgen quickstart "$@"
