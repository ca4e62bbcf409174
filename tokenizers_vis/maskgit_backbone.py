"""MaskGIT's VQGAN encoder/decoder (Chang et al. 2022), the tokenizer RAR and TiTok build on.

diffusers' Encoder/Decoder cannot express it, so it is written out here; the differences from the
taming/LDM backbone of :func:`~.base.build_autoencoder` are what make it MaskGIT's:

- no attention anywhere; the middle block is ``layers`` res blocks;
- res-block convs (and the encoder's ``conv_in``) have no bias;
- where a res block changes width, its 1x1 shortcut is applied to the block's *output*
  (``h + shortcut(h)``), not to its input: a quirk of the released weights, kept for parity;
- down-sampling is 2x2 average pooling (no conv), up-sampling nearest + 3x3 conv;
- the decoder has ``layers`` res blocks per level (taming has one more);
- the encoder's ``conv_out`` is 1x1;
- the network works on pixels in ``[0, 1]``: this module maps mmgen's ``[-1, 1]`` in and out.

Module names follow diffusers' (``down_blocks.i.resnets.j``, ``mid_block``, ``conv_norm_out``) so
one key mapping style serves every backbone (see ``mmgen.convert.tokenizers``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MaskGITEncoder", "MaskGITDecoder"]


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.conv_shortcut = nn.Conv2d(cout, cout, 1, bias=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return h + (x if self.conv_shortcut is None else self.conv_shortcut(h))


class _Resample(nn.Module):
    """2x nearest up-sampling + 3x3 conv (holds ``conv`` so keys read ``upsamplers.0.conv``)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, upsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(_ResBlock(cin if i == 0 else cout, cout, groups) for i in range(layers))
        if upsample:
            self.upsamplers = nn.ModuleList([_Resample(cout)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for r in self.resnets:
            x = r(x)
        return self.upsamplers[0](x) if hasattr(self, "upsamplers") else x


class _Mid(nn.Module):
    def __init__(self, ch: int, layers: int, groups: int) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(_ResBlock(ch, ch, groups) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for r in self.resnets:
            x = r(x)
        return x


class MaskGITEncoder(nn.Module):
    """Pixels ``[-1, 1]`` (B,3,H,W) -> latents (B, z_channels, H/f, W/f), ``f = 2^(len(channels)-1)``."""

    def __init__(self, channels: tuple[int, ...], layers: int, z_channels: int, groups: int = 32) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, channels[0], 3, padding=1, bias=False)
        cins = (channels[0],) + tuple(channels[:-1])
        self.down_blocks = nn.ModuleList(_Level(ci, co, layers, groups, upsample=False) for ci, co in zip(cins, channels))
        self.mid_block = _Mid(channels[-1], layers, groups)
        self.conv_norm_out = nn.GroupNorm(groups, channels[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(channels[-1], z_channels, 1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        h = self.conv_in((pixels + 1) / 2)
        last = len(self.down_blocks) - 1
        for i, level in enumerate(self.down_blocks):
            h = level(h)
            if i < last:
                h = F.avg_pool2d(h, kernel_size=2, stride=2)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(h))))


class MaskGITDecoder(nn.Module):
    """Latents (B, z_channels, h, w) -> unclamped pixels on mmgen's ``[-1, 1]`` scale."""

    def __init__(self, channels: tuple[int, ...], layers: int, z_channels: int, groups: int = 32) -> None:
        super().__init__()
        n = len(channels)
        self.conv_in = nn.Conv2d(z_channels, channels[-1], 3, padding=1)
        self.mid_block = _Mid(channels[-1], layers, groups)
        levels, cin = [], channels[-1]
        for i in reversed(range(n)):  # deepest level first, as it runs
            levels.append(_Level(cin, channels[i], layers, groups, upsample=i != 0))
            cin = channels[i]
        self.up_blocks = nn.ModuleList(levels)
        self.conv_norm_out = nn.GroupNorm(groups, channels[0], eps=1e-6)
        self.conv_out = nn.Conv2d(channels[0], 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid_block(self.conv_in(z))
        for level in self.up_blocks:
            h = level(h)
        return self.conv_out(F.silu(self.conv_norm_out(h))) * 2 - 1
