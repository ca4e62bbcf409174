"""Whether bf16 pays off on a device: a CPU needs bf16 matrix units, else bf16 autocast is slower than fp32.

On x86 CPUs with AVX-512 BF16 or AMX, bf16 matmuls run several times faster than fp32 (VAR-d16: 1.8x
training, 2.5x sampling; ``bench/RESULTS.md``). Without them oneDNN emulates bf16 and a matmul runs ~4x
*slower* than in fp32 (measured on an AVX-512F Xeon without BF16: 33 against 140 GFLOP/s), so asking
for bf16 there gets a warning instead of a silent slowdown.
"""
from __future__ import annotations

import warnings

import torch

__all__ = ["bf16_is_fast", "warn_if_slow_bf16"]


def bf16_is_fast(device: torch.device | str) -> bool | None:
    """True/False where it can be told (CUDA: compute capability; x86 CPU: AVX-512 BF16 or AMX), else None."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return None
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(p is None for p in probes) or not getattr(torch.cpu, "_is_avx2_supported", lambda: False)():
        return None  # not an x86 CPU torch can probe (e.g. ARM): no claim either way
    return bool(probes[0]() or probes[1]())


def warn_if_slow_bf16(device: torch.device | str, what: str = "bf16") -> None:
    """Warn, once per call site, when bf16 was asked for on a device whose matmuls are slower in bf16 than in fp32."""
    if bf16_is_fast(device) is False:
        warnings.warn(f"{what} on this {torch.device(device).type}: it has no bf16 matrix units (AVX-512 BF16 or AMX), "
                      "so bf16 matmuls run several times slower than fp32 here; use fp32 (precision auto)", stacklevel=3)
