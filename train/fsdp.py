"""FSDP2 (``fully_shard``) for the trainer, selected with ``TrainConfig.parallel = "fsdp"``.

Every transformer block is its own shard group (its parameters are gathered just before it
runs and freed after), then the root takes the rest. Checkpoints keep the single-process format
(full tensors, the optimizer state keyed by parameter index), so a run saved on N ranks
resumes on M, or on one, and ``mmgen.load`` never sees a shard. The price is that saving
gathers every tensor (a collective: all ranks call these functions).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmgen.train.distributed import DistInfo

__all__ = ["shard", "full_tensor", "full_state_dict", "load_full_state_dict", "full_optimizer_state",
           "load_full_optimizer_state"]


def _dtensor():
    from torch.distributed.tensor import DTensor, distribute_tensor

    return DTensor, distribute_tensor


def shard(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """Shard ``model`` in place over all ranks: each ``mmgen.nn.transformer.Block``, then the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from mmgen.nn.transformer import Block

    mesh = init_device_mesh(device.type, (info.world_size,))
    for module in model.modules():
        if isinstance(module, Block):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered to its full value (collective); any other tensor unchanged."""
    DTensor, _ = _dtensor()
    return t.full_tensor() if isinstance(t, DTensor) else t


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's state with every shard gathered, on CPU (collective)."""
    return {k: full_tensor(v).detach().cpu() for k, v in module.state_dict().items()}


def _like(full: torch.Tensor, ref: Any) -> Any:
    """``full`` laid out like ``ref``: sharded the same way if ``ref`` is a DTensor."""
    DTensor, distribute_tensor = _dtensor()
    if isinstance(ref, DTensor):
        return distribute_tensor(full.to(ref.device, ref.dtype), ref.device_mesh, ref.placements)
    return full


def load_full_state_dict(module: nn.Module, full: dict[str, torch.Tensor]) -> None:
    """Load full tensors (a single-process checkpoint) into a sharded module."""
    current = module.state_dict()
    missing, unexpected = current.keys() - full.keys(), full.keys() - current.keys()
    if missing or unexpected:
        raise ValueError(f"state does not fit {type(module).__name__}: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    module.load_state_dict({k: _like(full[k], current[k]) for k in current}, strict=True)


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` with sharded moments gathered (collective, same order on every rank)."""
    sd = optimizer.state_dict()
    state = {i: {k: full_tensor(v).detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
             for i, s in sorted(sd["state"].items())}
    return {"state": state, "param_groups": sd["param_groups"]}


def load_full_optimizer_state(optimizer: torch.optim.Optimizer, full: dict[str, Any]) -> None:
    """Load a full (single-process) optimizer state, sharding each moment like its parameter."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state = {}
    for i, s in full["state"].items():
        p = params[int(i)]
        state[int(i)] = {k: _like(v, p) if isinstance(v, torch.Tensor) and v.shape == p.shape else v
                         for k, v in s.items()}
    optimizer.load_state_dict({"state": state, "param_groups": full["param_groups"]})
