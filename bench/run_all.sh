#!/usr/bin/env bash
# Every benchmark that runs on the available device, one command (set up first: bash scripts/setup.sh):
#   bash bench/run_all.sh            # tables on stdout, JSON in bench/results/*_<device>.json
# On a CUDA machine the throughput rows are the papers' reference sizes in bf16 (with and without
# torch.compile); on CPU the tiny presets. Checkpoint-based benchmarks run when their folders exist.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] && source .venv/bin/activate
dev=$(python -c "import torch; print(torch.cuda.get_device_name().split()[-1].lower() if torch.cuda.is_available() else 'cpu')" | tr -c 'a-z0-9\n' '-')
out=bench/results
python bench/bench_train.py --json "$out/train_$dev.json"
if [ "$dev" != cpu ]; then
  python bench/bench_train.py --compile --no-sampling --json "$out/train_${dev}_compiled.json"
  python bench/bench_train.py --compile --attn flex --no-sampling --json "$out/train_${dev}_compiled_flex.json"
  python bench/bench_train.py --size tiny --json "$out/train_${dev}_tiny.json"
fi
python bench/bench_sampling.py --batch 1 16 --json "$out/sampling_$dev.json"
python bench/bench_memory.py --steps 20 --json "$out/memory_$dev.json"
python bench/bench_loader.py --json "$out/loader_$dev.json"
echo "results written to $out/*_$dev*.json"
