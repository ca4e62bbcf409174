"""The one trainer, for tokenizers and generators alike.

It knows nothing about what it trains: ``loss_fn(model, batch) -> (loss, logs)`` does. The data
position is just the number of samples consumed (``step * batch_size``), and every source of
randomness is checkpointed, so a resumed run reproduces the uninterrupted loss curve exactly.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import json
import math
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset

from mmgen.config import from_dict, to_dict
from mmgen.fs import writing
from mmgen.modeling import ConfigModule
from mmgen.nn.transformer import compile_blocks
from mmgen.precision import warn_if_slow_bf16
from mmgen.train import distributed as D
from mmgen.train import fsdp as FS
from mmgen.train.ema import EMA
from mmgen.train.optim import lr_at, make_adamw
from mmgen.train.state import TrainingState, latest_checkpoint, load_latest_intact, rng_state, save_checkpoint, set_rng_state

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "default_export", "seed_everything"]

LossFn = Callable[..., tuple[torch.Tensor, dict[str, Any]]]
ExportFn = Callable[[nn.Module, "nn.Module | None", Path, int], Any]
# Fields that shape the trajectory: a resume with different values would not continue the same run.
_RESUME_MUST_MATCH = ("batch_size", "grad_accum", "lr", "min_lr_ratio", "warmup_steps", "weight_decay", "betas",
                      "grad_clip", "ema_decay", "ema_warmup", "precision", "seed")


class TrainingDiverged(RuntimeError, ValueError):
    """Loss or gradient norm became NaN/inf; raised before the bad update or any checkpoint of it.

    Also a ``ValueError`` (a bad setting: too high a learning rate, bad data), so the command line
    prints it as one line instead of a traceback.
    """

    def __init__(self, step: int, values: dict[str, float]) -> None:
        self.step, self.values = step, values
        bad = ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))
        super().__init__(f"training diverged at step {step}: non-finite {bad} (all: {values}); no update or checkpoint was "
                         "written from it: lower train.lr or train.grad_clip, lengthen train.warmup_steps, or check the data")


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32  # global samples per optimizer step (all ranks, all micro-batches)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.05  # applied to >=2-D weights only
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # 0 = no clipping (the norm is still logged)
    ema_decay: float = 0.0  # 0 = no EMA
    ema_warmup: bool = True
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    seed: int = 0
    log_every: int = 10  # logged values are means over the window; keep ckpt_every a multiple of it
    ckpt_every: int = 500  # (a resume starts a new window at its checkpoint)
    keep_last: int = 2
    num_workers: int = 0
    out_dir: str = "runs/default"
    max_time_min: float | None = None  # stop (with a checkpoint) after this much wall time
    image_every: int = 0  # call sample_fn every N steps (0 = never)
    find_unused_parameters: bool = False  # DDP: models whose loss skips some parameters at some steps
    parallel: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: replicate (DDP) or shard (FSDP2 fully_shard)
    compile: bool | str = False  # torch.compile each transformer block (True = inductor, or a backend name)
    progress: bool = True  # tqdm bar on rank 0
    tensorboard: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "log_every", "ckpt_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"TrainConfig.batch_size={self.batch_size} is not divisible by grad_accum={self.grad_accum}")
        if self.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"TrainConfig.parallel must be 'ddp' or 'fsdp', got {self.parallel!r}")


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_export(model: nn.Module, ema_model: nn.Module | None, path: Path, step: int) -> None:
    """Save the EMA weights (or the live ones) as ``config.json + model.safetensors``."""
    m = ema_model if ema_model is not None else model
    if isinstance(m, ConfigModule):
        m.save_pretrained(path, extra={"train_step": step})


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in x):
        return type(x)(_to_device(v, device) for v in x)
    return x


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


class Trainer:
    """AdamW + warmup/cosine + clipping + EMA + accumulation + DDP + exact-resume checkpoints.

    Args:
        loss_fn: ``loss_fn(model, batch[, step=...]) -> (loss, logs)``; ``model`` is the DDP wrapper
            when distributed (call it, so DDP's hooks run); ``step`` (updates done) is passed if
            the function accepts it.
        dataset: map-style, read by index: sequentially when unbounded (``infinite = True`` or no
            ``__len__``), else in a per-epoch permutation from ``(seed, epoch)``; or an
            IterableDataset: a global stream, or one that splits itself across ranks (it has a
            ``world_size`` attribute, like ``mmgen.data.ShardDataset``). On resume a stream's
            ``skip(n)`` is used if it has one; otherwise ``n`` samples are read and dropped.
        export_fn: ``export_fn(model, ema_model_or_None, out_dir/"model", step)`` after every checkpoint.
        hooks: ``hook(trainer)`` after every step, on every rank.
        sample_fn: ``sample_fn(model, ema_model_or_None, step) -> uint8 (3, H, W)`` image grid,
            called on rank 0 every ``cfg.image_every`` steps with its own RNG (training is unaffected).
    """

    def __init__(self, cfg: TrainConfig, model: nn.Module, loss_fn: LossFn, dataset: Dataset | IterableDataset,
                 collate_fn: Callable | None = None, export_fn: ExportFn | None = default_export,
                 hooks: Sequence[Callable[["Trainer"], Any]] = (), sample_fn: Callable | None = None,
                 resume: bool = False, device: torch.device | str | None = None) -> None:
        self.cfg, self.loss_fn, self.dataset, self.collate_fn = cfg, loss_fn, dataset, collate_fn
        self.export_fn, self.hooks, self.sample_fn, self.resume = export_fn, list(hooks), sample_fn, resume
        self.dist, self._owns_group = D.setup(torch.device(device) if device else None)
        self.device = torch.device(device) if device else D.default_device(self.dist)
        D.rank_slice(cfg.batch_size, cfg.grad_accum, self.dist)  # fail early on an indivisible batch
        self.out_dir = Path(cfg.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.model = model.to(self.device)
        self.sharded = cfg.parallel == "fsdp" and self.dist.enabled
        if self.sharded:
            if cfg.image_every:
                raise ValueError("image_every is not supported with parallel='fsdp' (the model is sharded); "
                                 "sample from the exported model instead")
            # Unsharded twins that the gathered weights are loaded into for export (rank 0, CPU),
            # and an EMA on every rank, sharded like the model so its update stays local.
            self._twins = [copy.deepcopy(model).cpu() for _ in range(1 + (cfg.ema_decay > 0))] if self.is_main else []
            self.ema = EMA(self.model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay > 0 else None
            self.wrapped = FS.shard(self.model, self.dist, self.device)
            if self.ema is not None:
                FS.shard(self.ema.model, self.dist, self.device)
        else:
            self.wrapped = D.wrap(self.model, self.dist, self.device, cfg.find_unused_parameters)
            self.ema = EMA(self.model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay > 0 and self.is_main else None
        if cfg.compile:
            compile_blocks(self.model, cfg.compile)
        self.optimizer = self._make_optimizer()
        use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        self.autocast_dtype = torch.bfloat16 if use_bf16 else None
        if cfg.precision == "bf16":
            warn_if_slow_bf16(self.device, "train.precision=bf16")
        try:
            self._pass_step = "step" in inspect.signature(loss_fn).parameters
        except (TypeError, ValueError):  # callables without an inspectable signature
            self._pass_step = False
        self.step = 0  # optimizer updates done
        self.last_loss = float("nan")

    # ------------------------------------------------------------------ setup
    def _make_optimizer(self) -> torch.optim.Optimizer:
        return make_adamw(self.model, self.cfg.lr, tuple(self.cfg.betas), self.cfg.weight_decay)

    @property
    def ema_model(self) -> nn.Module | None:
        return self.ema.model if self.ema is not None else None

    def _full_states(self) -> tuple[dict, dict, dict | None]:
        """Model, optimizer and EMA state as full tensors (gathered from the shards under FSDP)."""
        if not self.sharded:
            return self.model.state_dict(), self.optimizer.state_dict(), self.ema.state_dict() if self.ema else None
        return (FS.full_state_dict(self.model), FS.full_optimizer_state(self.optimizer),
                FS.full_state_dict(self.ema.model) if self.ema else None)

    def _export(self, model_sd: dict, ema_sd: dict | None) -> None:
        if self.export_fn is None:
            return
        if not self.sharded:
            self.export_fn(self.model, self.ema_model, self.out_dir / "model", self.step)
            return
        for twin, sd in zip(self._twins, (model_sd, ema_sd)):
            twin.load_state_dict(sd, strict=True)
        self.export_fn(self._twins[0], self._twins[1] if self.ema else None, self.out_dir / "model", self.step)

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    # ------------------------------------------------------------------ checkpoints
    def _save(self) -> None:
        ranks = D.all_gather_dict(rng_state(self.device), self.dist, self.device)  # collective: every rank
        model_sd, optim_sd, ema_sd = self._full_states()  # collective under FSDP
        if self.is_main:
            st = TrainingState(step=self.step, samples_seen=self.step * self.cfg.batch_size,
                               model=model_sd, optimizer=optim_sd, rng=ranks, ema=ema_sd,
                               ema_updates=self.ema.num_updates if self.ema else 0,
                               meta={"config": to_dict(self.cfg), "world_size": self.dist.world_size})
            save_checkpoint(self.ckpt_dir, st, self.cfg.keep_last)
            with writing(self.out_dir / "model", "the exported model"):
                self._export(model_sd, ema_sd)
        D.barrier(self.dist)

    def _restore(self) -> dict[str, torch.Tensor] | None:
        """Load the latest checkpoint; returns this rank's RNG state (applied once data is set up)."""
        found = load_latest_intact(self.ckpt_dir)
        if found is None:
            return None
        path, st = found
        saved = from_dict(TrainConfig, st.meta["config"])
        diff = {k: (getattr(saved, k), getattr(self.cfg, k)) for k in _RESUME_MUST_MATCH
                if getattr(saved, k) != getattr(self.cfg, k)}
        if diff:
            raise ValueError(f"cannot resume {path}: config differs (saved, now): {diff}")
        if self.ema is not None and st.ema is None:
            raise ValueError(f"{path} has no EMA weights but ema_decay={self.cfg.ema_decay}")
        if self.sharded:
            FS.load_full_state_dict(self.model, st.model)
            FS.load_full_optimizer_state(self.optimizer, st.optimizer)
            if self.ema is not None:
                FS.load_full_state_dict(self.ema.model, st.ema)
                self.ema.num_updates = int(st.ema_updates)
        else:
            self.model.load_state_dict(st.model, strict=True)
            self.optimizer.load_state_dict(st.optimizer)
            if self.ema is not None:
                self.ema.load_state_dict(st.ema, st.ema_updates)
        self.step = st.step
        if len(st.rng) != self.dist.world_size and self.is_main:
            print(f"[mmgen] warning: {path} was written by {len(st.rng)} ranks, resuming on "
                  f"{self.dist.world_size}: random streams will differ", file=sys.stderr)
        return st.rng[self.dist.rank % len(st.rng)]

    # ------------------------------------------------------------------ logging
    def _open_logs(self) -> None:
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.writer = None
        if not self.is_main:
            return
        with writing(self.metrics_path, "training logs"):
            self._start_metrics()
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            with writing(self.out_dir / "tb", "tensorboard logs"):
                self.writer = SummaryWriter(str(self.out_dir / "tb"), purge_step=self.step + 1 if self.step else None)

    def _start_metrics(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        kept = []
        if self.step > 0 and self.metrics_path.is_file():  # drop lines a killed run wrote past its checkpoint
            kept = [line for line in self.metrics_path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= self.step]
        self.metrics_path.write_text("".join(line + "\n" for line in kept))

    def _log(self, row: dict[str, float]) -> None:
        with writing(self.metrics_path, "training logs"), self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for k, v in row.items():
                if k != "step":
                    self.writer.add_scalar(k if "/" in k else f"train/{k}", v, row["step"])

    def _log_images(self) -> None:
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            was_training = self.model.training
            self.model.eval()
            with torch.no_grad():
                grid = self.sample_fn(self.model, self.ema_model, self.step)
            self.model.train(was_training)
        if grid.dtype != torch.uint8 or grid.ndim != 3 or grid.shape[0] not in (1, 3):
            raise ValueError(f"sample_fn must return a uint8 (1|3, H, W) grid, got {grid.dtype} {tuple(grid.shape)}")
        from PIL import Image

        (self.out_dir / "samples").mkdir(parents=True, exist_ok=True)
        hwc = grid.detach().cpu().permute(1, 2, 0).numpy()
        Image.fromarray(hwc[..., 0] if hwc.shape[-1] == 1 else hwc).save(self.out_dir / "samples" / f"step_{self.step:07d}.png")
        if self.writer is not None:
            self.writer.add_image("samples", grid.cpu(), self.step)

    # ------------------------------------------------------------------ training
    def _train_step(self, batches) -> tuple[float, float, dict[str, torch.Tensor]]:
        cfg = self.cfg
        lr = lr_at(self.step, base_lr=cfg.lr, total_steps=cfg.steps, warmup_steps=cfg.warmup_steps,
                   min_lr_ratio=cfg.min_lr_ratio)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.device)
        logs: dict[str, torch.Tensor] = {}
        for m in range(cfg.grad_accum):
            batch = _to_device(next(batches), self.device)
            last = m == cfg.grad_accum - 1
            if self.sharded:
                self.model.set_requires_gradient_sync(last)
                sync = contextlib.nullcontext()
            else:
                sync = self.wrapped.no_sync() if self.dist.enabled and not last else contextlib.nullcontext()
            amp = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                   else contextlib.nullcontext())
            with sync:
                with amp:
                    kw = {"step": self.step} if self._pass_step else {}
                    loss, step_logs = self.loss_fn(self.wrapped, batch, **kw)
                (loss / cfg.grad_accum).backward()
            loss_sum += loss.detach().float()
            for k, v in step_logs.items():
                v = torch.as_tensor(v.detach() if isinstance(v, torch.Tensor) else v, dtype=torch.float32, device=self.device)
                if v.numel() != 1:
                    raise ValueError(f"loss_fn log {k!r} must be a scalar, got shape {tuple(v.shape)}")
                logs[k] = logs.get(k, 0.0) + v.reshape(()) / cfg.grad_accum
        loss_mean = D.all_reduce_mean(loss_sum / cfg.grad_accum, self.dist)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = FS.full_tensor(torch.nn.utils.clip_grad_norm_(params, max_norm))
        loss_v, norm_v = torch.stack([loss_mean, grad_norm.to(loss_mean)]).tolist()
        if not (math.isfinite(loss_v) and math.isfinite(norm_v)):
            raise TrainingDiverged(self.step + 1, {"loss": loss_v, "grad_norm": norm_v, **{k: v.item() for k, v in logs.items()}})
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return loss_v, norm_v, logs

    def fit(self, resume: bool | None = None) -> dict[str, Any]:
        """Train to ``cfg.steps`` (continuing from the latest checkpoint if ``resume``); returns a summary."""
        cfg = self.cfg
        resume = self.resume if resume is None else resume
        pbar = None
        self.writer = None
        try:
            rng = self._restore() if resume else None
            if not resume and latest_checkpoint(self.ckpt_dir) is not None:
                raise FileExistsError(f"{self.ckpt_dir} already holds checkpoints; resume=True or use another out_dir")
            self._open_logs()
            start, t0 = self.step, time.perf_counter()
            batches = D.batch_loader(self.dataset, self.collate_fn, info=self.dist, global_batch=cfg.batch_size,
                                     grad_accum=cfg.grad_accum, start_step=start, seed=cfg.seed,
                                     num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda")
            if rng is not None:
                set_rng_state(rng, self.device)  # after the loader exists: exact continuation
            elif start == 0:
                seed_everything(cfg.seed + self.dist.rank)
            if self.is_main and cfg.progress:
                from tqdm.auto import tqdm

                pbar = tqdm(total=cfg.steps, initial=start, dynamic_ncols=True, desc=self.out_dir.name)
            self.model.train()
            win_loss, win_norm, win_logs, win_n, win_t = 0.0, 0.0, {}, 0, time.perf_counter()
            stopped_early = False
            while self.step < cfg.steps:
                loss_v, norm_v, logs = self._train_step(batches)
                lr = self.optimizer.param_groups[0]["lr"]
                self.last_loss = loss_v
                win_loss, win_norm, win_n = win_loss + loss_v, win_norm + norm_v, win_n + 1
                for k, v in logs.items():
                    win_logs[k] = win_logs.get(k, 0.0) + v
                done = self.step == cfg.steps
                if cfg.max_time_min is not None and not done:
                    over = torch.tensor(float(time.perf_counter() - t0 > 60 * cfg.max_time_min), device=self.device)
                    stopped_early = done = bool(D.all_reduce_mean(over, self.dist).item() > 0)
                if self.step % cfg.log_every == 0 or done:
                    keys = sorted(win_logs)
                    vals = D.all_reduce_mean(torch.stack([win_logs[k] for k in keys]), self.dist).tolist() if keys else []
                    now = time.perf_counter()
                    row = {"step": self.step, "loss": win_loss / win_n, "lr": lr, "grad_norm": win_norm / win_n,
                           **{k: v / win_n for k, v in zip(keys, vals)},
                           "perf/samples_per_s": win_n * cfg.batch_size / max(now - win_t, 1e-9),
                           "perf/peak_mem_mb": _peak_mem_mb(self.device)}
                    if self.is_main:
                        self._log(row)
                        if pbar is not None:
                            pbar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}")
                    win_loss, win_norm, win_logs, win_n, win_t = 0.0, 0.0, {}, 0, now
                if self.sample_fn is not None and cfg.image_every and self.step % cfg.image_every == 0 and self.is_main:
                    self._log_images()
                if self.step % cfg.ckpt_every == 0 or done:
                    self._save()
                if pbar is not None:
                    pbar.update(1)
                for hook in self.hooks:
                    hook(self)
                if stopped_early:
                    break
            seconds = time.perf_counter() - t0
            if self.step == start and self.is_main and self.metrics_path.is_file():  # resumed a finished run
                rows = self.metrics_path.read_text().splitlines()
                self.last_loss = json.loads(rows[-1])["loss"] if rows else self.last_loss
            return {"final_loss": self.last_loss, "steps": self.step, "seconds": seconds,
                    "samples_per_s": (self.step - start) * cfg.batch_size / max(seconds, 1e-9),
                    "peak_mem_mb": _peak_mem_mb(self.device), "stopped_early": stopped_early,
                    "out_dir": str(self.out_dir)}
        finally:
            if pbar is not None:
                pbar.close()
            if self.writer is not None:
                self.writer.close()
            D.teardown(self._owns_group)
            self._owns_group = False
