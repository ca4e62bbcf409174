"""Can the unified model pick its own best image? Best-of-N by its own scores, against the shapes judge.

    python bench/bench_unified_rerank.py --ckpt checkpoints/shapes-unified --n 300 --candidates 8

For each validation prompt (seed 4242, two objects) the model draws ``--candidates`` images with its
recommended sampler (seeds 0, 1000, 2000, ...); each is judged, and scored by the model alone:

- ``caption``: log p(prompt | image codes) through its image -> caption task;
- ``caption_reencoded``: the same on the codes of the decoded image encoded again (sees decode errors);
- ``pmi``: sum over codes of log p(code | prompt) - log p(code | empty prompt) (CFG's two branches);
- ``caption_match``: the model's own greedy caption of the re-encoded image names the prompt's objects
  (candidates that match first, then ``caption_reencoded``).

``random`` is one candidate's judge score, ``oracle`` the share of prompts with at least one right candidate;
``SCORE@n`` is the judge score of the best-scored of the first n candidates.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace

import torch

import mmgen
from mmgen.data.shapes import parse_caption
from mmgen.eval.generation import shapes_prompts
from mmgen.eval.judge import judge
from mmgen.modeling import write_json_atomic
from mmgen.models.unified import CODE, TEXT
from mmgen.nn.masks import Causal
from mmgen.pipeline import to_uint8


@torch.no_grad()
def slot_logprobs(g, task: str, codes: torch.Tensor, text: torch.Tensor, slot_kind: int) -> torch.Tensor:
    """Teacher-forced log-probabilities of the ``slot_kind`` (CODE or TEXT) targets of a task's sequence, ``(B, slots)``."""
    ids, pos = g.build(task, codes, text)
    logits = g.head(g.transformer(g.embed(ids[:, :-1]), pos[:-1], Causal())).float()
    lo, hi = (g.code_offset, g.code_offset + g.config.vocab_size) if slot_kind == CODE else (0, g.text.vocab_size)
    slot = (g.template(task, 1)[0][1:] == slot_kind).to(ids.device)
    tgt = ids[:, 1:][:, slot]
    lp = logits[:, slot, lo:hi].log_softmax(-1).gather(-1, (tgt - lo).clamp(0, hi - lo - 1)[..., None])[..., 0]
    return lp if slot_kind == CODE else lp * (tgt != g.text.pad)  # no score for caption padding


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", default="checkpoints/shapes-unified")
    ap.add_argument("--n", type=int, default=300, help="validation prompts (two objects)")
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="bench/results/unified_rerank.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = mmgen.load(args.ckpt)
    g, tok = pipe.generator, pipe.tokenizer
    prompts = shapes_prompts(args.n, 2, seed=4242)
    cond, null = g.make_condition(prompts=prompts), g.cond_embed.null(args.n, g.device)
    key = lambda c: sorted(map(repr, parse_caption(c)))  # noqa: E731
    judged, scores = [], {"caption": [], "caption_reencoded": [], "pmi": [], "caption_match": []}
    for r in range(args.candidates):
        toks = g.generate(cond, replace(pipe.sampler, seed=1000 * r), latent_frames=1)
        pixels = tok.decode(toks, frames=1)[:, :, 0]
        judged.append(torch.tensor([judge(im.permute(1, 2, 0).numpy(), p).whole for im, p in zip(to_uint8(pixels), prompts)], dtype=torch.float))
        again = tok.encode(pixels.clamp(-1, 1)[:, :, None])
        scores["caption"].append(slot_logprobs(g, "i2t", toks.ids, cond.text, TEXT).sum(1))
        scores["caption_reencoded"].append(slot_logprobs(g, "i2t", again.ids, cond.text, TEXT).sum(1))
        scores["pmi"].append((slot_logprobs(g, "t2i", toks.ids, cond.text, CODE) - slot_logprobs(g, "t2i", toks.ids, null.text, CODE)).sum(1))
        match = torch.tensor([key(c) == key(p) for c, p in zip(g.caption(again), prompts)], dtype=torch.float)
        scores["caption_match"].append(1000 * match + scores["caption_reencoded"][-1])
        print(f"candidate {r}: judge {judged[-1].mean():.3f}", flush=True)
    right = torch.stack(judged)
    res = {"random": right.mean().item(), "oracle": right.max(0).values.mean().item()}
    for name, s in scores.items():
        s = torch.stack(s)
        for n in sorted({2, 4, args.candidates}):
            if n <= args.candidates:
                res[f"{name}@{n}"] = right[:n].gather(0, s[:n].argmax(0)[None])[0].mean().item()
    print(json.dumps(res, indent=1))
    write_json_atomic(args.json, {"ckpt": args.ckpt, "prompts": args.n, "prompt_seed": 4242, "objects": 2, "sampler": asdict(pipe.sampler),
                                  "candidates": args.candidates, "results": res})


if __name__ == "__main__":
    main()
