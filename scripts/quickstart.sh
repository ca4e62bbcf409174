#!/usr/bin/env bash
# The main job: set up, sample a captioned grid from the shipped VAR model and score it with the shapes
# judge, and serve the web demo on the shipped checkpoints (http://127.0.0.1:7860, localhost only).
# The demo starts first (ready in seconds, it prints its address), keeps running after the quickstart,
# and stops with Ctrl-C. It is skipped, so the script never blocks, with --no-demo, when CI is set, or
# when stdin is not a terminal. MMGEN_DEMO_HOST / MMGEN_DEMO_PORT change where it listens.
set -euo pipefail
cd "$(dirname "$0")/.."
demo=1
args=()
for a in "$@"; do
    if [ "$a" = "--no-demo" ]; then demo=0; else args+=("$a"); fi
done
if [ -n "${CI:-}" ] || [ ! -t 0 ]; then demo=0; fi
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
host=${MMGEN_DEMO_HOST:-127.0.0.1}
port=${MMGEN_DEMO_PORT:-7860}
if [ "$demo" = 1 ]; then
    .venv/bin/mmgen demo --host "$host" --port "$port" &
    demo_pid=$!
    trap 'kill "$demo_pid" 2>/dev/null || true' EXIT
fi
.venv/bin/mmgen quickstart ${args[@]+"${args[@]}"}
if [ "$demo" = 1 ]; then
    echo "web demo: http://$host:$port/ (Ctrl-C stops it)"
    wait "$demo_pid"
else
    echo "web demo: .venv/bin/mmgen demo, then open http://127.0.0.1:7860/"
fi
