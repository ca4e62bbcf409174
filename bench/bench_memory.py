"""Peak memory of training each tiny recipe on CPU (a fresh process per recipe, peak RSS).

    python bench/bench_memory.py --steps 20 --json bench/results/memory_cpu.json

Generator recipes need a tokenizer; a freshly initialised one of the recipe's preset is written to
a temporary folder (memory does not depend on trained weights).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from mmgen.modeling import write_json_atomic

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {
    "shapes_vq": None,
    "shapes_msvq": None,
    "shapes_raster": "vq-tiny",
    "shapes_var": "msvq-tiny",
    "digits_vq": None,
    "digits_raster": "vq-tiny",
    "digits_msvq": None,
    "digits_var": "msvq-tiny",
}

CHILD = r"""
import json, resource, sys
from mmgen.train.run import train
kind, recipe, out, steps, tok = sys.argv[1:6]
ov = [f"train.steps={steps}", "train.log_every=5", f"train.ckpt_every={steps}", "train.progress=false", "train.tensorboard=false"]
if tok != "-":
    ov.append(f"tokenizer={tok}")
train(kind, recipe, overrides=ov, out=out)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, tok_preset in RECIPES.items():
            tok = "-"
            if tok_preset:
                import mmgen

                tok = str(Path(tmp) / f"tok-{tok_preset}")
                mmgen.create_tokenizer(tok_preset).save_pretrained(tok)
            kind = "generator" if tok_preset else "tokenizer"
            recipe = ROOT / "train" / "recipes" / f"{name}.yaml"
            res = subprocess.run([sys.executable, "-c", CHILD, kind, str(recipe), str(Path(tmp) / name), str(args.steps), tok],
                                 capture_output=True, text=True, check=True)
            peak = json.loads(res.stdout.strip().splitlines()[-1])["peak_rss_mb"]
            rows.append({"recipe": name, "steps": args.steps, "peak_rss_mb": round(peak, 1)})
            print(f"{name:16s} peak RSS {peak:8.1f} MB")
    if args.json:
        write_json_atomic(args.json, rows)


if __name__ == "__main__":
    main()
