"""Tiny models, data and helpers shared by the trainer tests (``test_trainer*.py``).

Run as a script, this file is the worker of the subprocess tests in ``test_trainer.py``:
``python tests/trainer_kit.py train OUT PAUSE_AT`` (killed by the test) and
``torchrun --nproc_per_node 2 tests/trainer_kit.py ddp|fsdp OUT``.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset, IterableDataset

from mmgen.modeling import ConfigModule
from mmgen.nn.masks import Causal
from mmgen.nn.transformer import Transformer, TransformerConfig
from mmgen.registry import register_preset
from mmgen.train import TrainConfig, Trainer
from mmgen.train.state import latest_checkpoint

torch.set_num_threads(1)
HERE = Path(__file__).resolve()
SIDE = 4  # pixels are (3, SIDE, SIDE)



# ----------------------------------------------------------------------------- tiny models and data
@dataclass
class TinyTokConfig:
    dim: int = 8
    side: int = SIDE
    depth: int = 0  # > 0: a real mmgen transformer over the pixels first (what FSDP shards per block)


class TinyTok(ConfigModule):
    """A linear autoencoder posing as a tokenizer: ``forward(pixels, step) == loss``."""

    config_class = TinyTokConfig
    kind = "tokenizer"

    def __init__(self, config) -> None:
        super().__init__(config)
        n = 3 * self.config.side ** 2
        self.enc = nn.Linear(n, self.config.dim)
        self.norm = nn.LayerNorm(self.config.dim)
        self.dec = nn.Linear(self.config.dim, n)
        if self.config.depth:
            self.body = Transformer(TransformerConfig(dim=12, depth=self.config.depth, heads=2))

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.config.depth:  # (B, 3, S, S) -> S*S tokens of 3 channels, zero-padded to the width
            x = nn.functional.pad(pixels.flatten(2).transpose(1, 2), (0, 9))
            side = torch.arange(self.config.side, dtype=torch.float32)
            x = self.body(x, torch.cartesian_prod(torch.zeros(1), side, side), Causal())
            pixels = x[..., :3].transpose(1, 2).reshape_as(pixels) + pixels
        return self.norm(self.enc(pixels.flatten(1)))

    def loss(self, pixels: torch.Tensor, step: int = 0):
        rec = self.dec(self.encode(pixels)).view_as(pixels)
        loss = (rec - pixels).pow(2).mean()
        return loss, {"mse": loss.detach(), "step_seen": float(step)}

    def forward(self, pixels: torch.Tensor, step: int = 0):
        return self.loss(pixels, step=step)


@dataclass
class FakeGenConfig:
    in_dim: int = 0  # set from the tokenizer (tokenizer_overrides)
    num_classes: int = 3


class FakeGen(ConfigModule):
    """Stands in for the lead's generator contract: bind_tokenizer / prepare_batch / forward."""

    config_class = FakeGenConfig
    kind = "generator"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.emb = nn.Embedding(self.config.num_classes, self.config.in_dim)
        self.proj = nn.Linear(self.config.in_dim, self.config.in_dim)

    def bind_tokenizer(self, tok: nn.Module) -> None:
        object.__setattr__(self, "tok", tok)  # not a submodule: stays frozen, outside the optimizer

    def prepare_batch(self, batch):
        with torch.no_grad():
            tokens = self.tok.encode(batch["pixels"])
        return tokens, batch["label"]

    def forward(self, tokens, cond):
        loss = (self.proj(self.emb(cond)) - tokens).pow(2).mean()
        return loss, {"gen_mse": loss.detach()}


for _name, _cls in (("test-tiny-tok", TinyTok), ("test-fake-gen", FakeGen)):
    try:
        register_preset(_name, _cls, tags=("test",))
    except KeyError:  # already registered (module imported twice)
        pass


def sample(i: int) -> dict:
    g = torch.Generator().manual_seed(1000 + i)
    return {"pixels": torch.rand(3, SIDE, SIDE, generator=g) * 2 - 1, "label": i % 3}


class World(Dataset):
    """Deterministic per index and unbounded, like the built-in worlds."""

    infinite = True

    def __getitem__(self, i: int) -> dict:
        return sample(i)


class Finite(Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> dict:
        return sample(i)


class Stream(IterableDataset):
    """A finite stream (re-iterated per epoch); ``skip`` optional, like WebDataset shards."""

    def __init__(self, n: int = 13, with_skip: bool = False) -> None:
        self.n = n
        if with_skip:
            self.skip = lambda k: _Skipped(self, k)

    def __iter__(self):
        return (sample(i) for i in range(self.n))


class _Skipped(IterableDataset):
    def __init__(self, base: Stream, k: int) -> None:
        self.base, self.k = base, k

    def __iter__(self):
        return (sample(i) for i in range(self.k % self.base.n, self.base.n))


class RankStream(IterableDataset):
    """Splits itself across ranks like ``ShardDataset``: rank r of w reads samples r, r + w, ..."""

    def __init__(self) -> None:
        self.rank, self.world_size, self.start = None, None, 0

    def skip(self, k: int) -> "RankStream":
        self.start += k
        return self

    def __iter__(self):
        r, w = self.rank or 0, self.world_size or 1
        return itertools.islice((sample(i) for i in range(10**6) if i % w == r), self.start, None)


def make_loss(noise: bool):
    """Loss that also draws from torch, numpy and python RNGs, so resume must restore all three."""

    def loss_fn(model, batch, step):
        loss, logs = model(batch["pixels"], step=step)
        if noise:
            extra = torch.randn(()) * 1e-3 + float(np.random.rand()) * 1e-3 + random.random() * 1e-3
            loss = loss + extra
        return loss, logs

    return loss_fn


def cfg(out: Path, **kw) -> TrainConfig:
    base = dict(steps=12, batch_size=4, lr=3e-2, warmup_steps=3, weight_decay=0.1, grad_clip=0.5, ema_decay=0.9,
                log_every=1, ckpt_every=4, keep_last=2, out_dir=str(out), progress=False, tensorboard=False)
    return TrainConfig(**(base | kw))


def fresh_model(seed: int = 0, depth: int = 0) -> TinyTok:
    torch.manual_seed(seed)
    return TinyTok(TinyTokConfig(depth=depth))


def losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]


def final_weights(out: Path) -> tuple[dict, dict]:
    ck = latest_checkpoint(out / "checkpoints")
    return load_file(str(ck / "model.safetensors")), load_file(str(ck / "ema.safetensors"))


def assert_same(a: dict, b: dict, exact: bool = True, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=atol, msg=k)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stop(Exception):
    pass



DDP_CFG = dict(steps=4, batch_size=8, grad_accum=2, ckpt_every=4)
FSDP_CFG = dict(steps=6, batch_size=8, grad_accum=2, ckpt_every=3, parallel="fsdp")


# ----------------------------------------------------------------------------- subprocess workers
def _worker_train(out: str, pause_at: str) -> None:
    def pause(tr):
        if tr.step == int(pause_at):
            time.sleep(600)  # the test SIGKILLs us here

    Trainer(cfg(Path(out)), fresh_model(), make_loss(True), World(), hooks=[pause]).fit()


def _worker_ddp(out: str) -> None:
    torch.distributed.init_process_group("gloo")  # ours, so both runs share it (the Trainer leaves it alone)
    try:
        for name, make in (("map", World), ("stream", RankStream)):
            Trainer(cfg(Path(out) / f"ddp-{name}", **DDP_CFG), fresh_model(), make_loss(False), make()).fit()
    finally:
        torch.distributed.barrier()  # rank 0 may still be writing; gloo aborts if a peer leaves early
        torch.distributed.destroy_process_group()
    # Interpreter shutdown can race gloo's background threads on a loaded machine ("terminate called
    # without an active exception", an upstream teardown issue); everything is written, so leave now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _worker_fsdp(out: str) -> None:
    torch.distributed.init_process_group("gloo")
    try:
        Trainer(cfg(Path(out) / "fsdp", **FSDP_CFG), fresh_model(depth=2), make_loss(False), World()).fit()
    finally:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    {"train": _worker_train, "ddp": _worker_ddp, "fsdp": _worker_fsdp}[sys.argv[1]](*sys.argv[2:])
