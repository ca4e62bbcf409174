"""Optional decoder heads of :class:`~mmgen.tokenizers_vis.flextok.FlexTokTokenizer` (off by default)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .patches import unpatchify

__all__ = ["ConvHead"]


class ConvHead(nn.Module):
    """Residual 3x3-conv refinement of the decoder's patch output at grid resolution (``FlexTokConfig.conv_head``).

    Input per grid cell: ``feat`` channels unpatchified from each patch state, the noisy grid and the linear output;
    the noise level shifts the hidden channels. The last conv starts at zero, so the head starts as the identity.
    """

    def __init__(self, dim: int, channels: int, patch_size: int, width: int, feat: int = 16) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.to_feat = nn.Linear(dim, feat * patch_size**2)
        self.conv_in = nn.Conv2d(feat + 2 * channels, width, 3, padding=1)
        self.time = nn.Linear(dim, width)
        self.conv_mid = nn.Conv2d(width, width, 3, padding=1)
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, h: torch.Tensor, x_t: torch.Tensor, out: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """Patch states ``(B, n, dim)``, noisy and output grids ``(B, C, H, W)``, time embedding ``(B, dim)`` -> a grid residual."""
        p, g = self.patch_size, x_t.shape[-1] // self.patch_size
        f = unpatchify(self.to_feat(h), p, g)
        y = F.silu(self.conv_in(torch.cat([f, x_t, out], 1)) + self.time(temb)[:, :, None, None])
        return self.conv_out(F.silu(self.conv_mid(y)))
