"""Tokenizer training losses: reconstruction, optional LPIPS-style perceptual, optional PatchGAN.

Everything is trained by ONE optimizer over all parameters. For that, the generator's
adversarial term runs the discriminator with *detached* parameters (``functional_call``) and the
discriminator's hinge loss sees ``recon.detach()``; both are simply added to the total, so the
autoencoder gets gradient only from the adversarial term and the discriminator only from its
own loss.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from mmgen.metrics import psnr as per_image_psnr

__all__ = ["psnr", "PatchDiscriminator", "LPIPS", "TokenizerCriterion", "hinge_d_loss"]

# relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of torchvision's vgg16().features
_VGG_TAPS = (4, 9, 16, 23, 30)
_VGG_WIDTHS = (64, 128, 256, 512, 512)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean per-image PSNR (dB) of images in ``[-1, 1]``, for training logs (the formula: :func:`mmgen.metrics.psnr`)."""
    return per_image_psnr(x, y).mean().float()


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


class PatchDiscriminator(nn.Module):
    """pix2pix / taming's N-layer PatchGAN: one real/fake logit per receptive-field patch."""

    def __init__(self, channels: int = 64, n_layers: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"disc_layers={n_layers} must be >= 1")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=False),
                       nn.BatchNorm2d(channels * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


class LPIPS(nn.Module):
    """LPIPS (Zhang et al. 2018) on torchvision's VGG16, weights read from a local file only.

    The file (``.safetensors`` or a ``torch.save``d state dict) must hold torchvision
    ``vgg16().features`` weights (keys ``features.N.*`` or ``N.*``); it may also hold LPIPS'
    learned heads ``lin{0-4}.model.1.weight`` (the official ``vgg.pth`` keys). Without heads every
    channel weighs 1 (LPIPS' "baseline" variant). Frozen; kept out of checkpoints.
    """

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        import torchvision

        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"perceptual_weights={str(path)!r} does not exist. VGG16 weights cannot be downloaded here: "
                "put a torchvision vgg16 state dict (optionally merged with LPIPS lin heads) at that path, "
                "or set perceptual_weight=0")
        state = _load_state(path)
        with torch.device("meta"):
            features = torchvision.models.vgg16(weights=None).features[: _VGG_TAPS[-1]]
        features = features.to_empty(device="cpu")
        vgg = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith(("lin", "classifier"))}
        vgg = {k: v for k, v in vgg.items() if k.split(".")[0].isdigit() and int(k.split(".")[0]) < _VGG_TAPS[-1]}
        missing = sorted(set(features.state_dict()) - set(vgg))
        if missing:
            raise ValueError(f"{path} lacks VGG16 feature weights {missing[:4]}...; expected torchvision vgg16 keys 'features.N.weight'")
        features.load_state_dict(vgg, strict=True)
        self.slices = nn.ModuleList(features[a:b] for a, b in zip((0,) + _VGG_TAPS[:-1], _VGG_TAPS))
        heads = [state.get(f"lin{i}.model.1.weight") for i in range(5)]
        for i, (h, c) in enumerate(zip(heads, _VGG_WIDTHS)):
            self.register_buffer(f"lin{i}", (h if h is not None else torch.ones(1, c, 1, 1)).float().reshape(1, c, 1, 1))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, y]).sub(self.shift).div(self.scale)
        total = x.new_zeros(())
        for i, block in enumerate(self.slices):
            h = block(h)
            fx, fy = F.normalize(h, dim=1, eps=1e-10).chunk(2)
            total = total + ((fx - fy).square() * getattr(self, f"lin{i}")).sum(1).mean()
        return total


class TokenizerCriterion(nn.Module):
    """Reconstruction (+ perceptual) (+ hinge GAN, both sides) for any pixel autoencoder.

    Reads from ``cfg``: recon_loss, perceptual_weight, perceptual_weights, disc_weight,
    disc_start, disc_adaptive_weight, disc_channels, disc_layers. The discriminator is a
    submodule only when ``disc_weight > 0``, so tiny checkpoints carry no discriminator.
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.recon_loss not in ("l1", "l2"):
            raise ValueError(f"recon_loss={cfg.recon_loss!r}; allowed: 'l1', 'l2'")
        if cfg.perceptual_weight > 0 and not cfg.perceptual_weights:
            raise ValueError(
                f"perceptual_weight={cfg.perceptual_weight} needs perceptual_weights=<local file with VGG16 weights>: "
                "they cannot be downloaded here. Point it to a torchvision vgg16 state dict or set perceptual_weight=0")
        self.discriminator = PatchDiscriminator(cfg.disc_channels, cfg.disc_layers) if cfg.disc_weight > 0 else None
        self._lpips: list[LPIPS] = []  # a list keeps it out of state_dict/parameters(); loaded on first use

    def perceptual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self._lpips:
            self._lpips.append(LPIPS(self.cfg.perceptual_weights))
        net = self._lpips[0].to(x.device)
        return net(x, y)

    def disc_loss(self, x: torch.Tensor, recon: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hinge loss of the discriminator on real ``x`` vs (already detached) ``recon``."""
        real, fake = self.discriminator(x.detach()), self.discriminator(recon)
        return hinge_d_loss(real, fake), real.mean(), fake.mean()

    def forward(self, x: torch.Tensor, recon: torch.Tensor, step: int = 0,
                last_layer: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        cfg = self.cfg
        rec = F.l1_loss(recon, x) if cfg.recon_loss == "l1" else F.mse_loss(recon, x)
        nll = rec
        logs: dict[str, Any] = {"recon_loss": rec.detach(), "psnr": psnr(recon.detach().clamp(-1, 1), x)}
        if cfg.perceptual_weight > 0:
            p = self.perceptual(recon, x)
            nll = nll + cfg.perceptual_weight * p
            logs["perceptual_loss"] = p.detach()
        total = nll
        if self.discriminator is not None and step >= cfg.disc_start:
            params = {k: p.detach() for k, p in self.discriminator.named_parameters()}
            g_loss = -functional_call(self.discriminator, params, (recon,)).mean()
            d_weight = torch.ones((), device=x.device)
            if cfg.disc_adaptive_weight and last_layer is not None and torch.is_grad_enabled() and g_loss.requires_grad:
                gn = torch.autograd.grad(nll, last_layer, retain_graph=True)[0].norm()
                gg = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0].norm()
                d_weight = (gn / (gg + 1e-4)).clamp(0.0, 1e4).detach()
            d_loss, real, fake = self.disc_loss(x, recon.detach())
            total = total + cfg.disc_weight * d_weight * g_loss + d_loss
            logs.update(g_loss=g_loss.detach(), d_loss=d_loss.detach(), d_weight=d_weight,
                        logits_real=real.detach(), logits_fake=fake.detach())
        return total, logs
