"""The Python API, the CLI and the demo give identical samples for the same folder, prompt and seed."""
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mmgen
from mmgen.app import handlers as H
from mmgen.app.models import ModelRegistry
from mmgen.cli import main
from mmgen.sampler import SamplerConfig

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "checkpoints"
pytestmark = pytest.mark.skipif(not (SHIPPED / "shapes-var" / "config.json").is_file(), reason="needs the shipped checkpoints")


def page_request(registry: ModelRegistry, name: str, **kw) -> H.Request:
    """A click on Generate with the controls as the page fills them for ``name`` (its recommended settings)."""
    rec = H.page_defaults(registry.info(name))
    return H.Request(model=name, cfg_scale=rec["cfg_scale"], cfg_schedule=rec["cfg_schedule"], temperature=rec["temperature"], top_k=rec["top_k"],
                     top_p=rec["top_p"], flow_steps=rec["flow_steps"], token_budget=rec["token_budget"], **kw)


def png(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def test_image_api_cli_demo_identical(tmp_path):
    name, prompt, n, seed = "shapes-var", "a small blue triangle at the bottom right", 3, 5
    folder = SHIPPED / name
    api = mmgen.load(folder)(prompt=prompt, n=n, seed=seed)
    assert not torch.equal(api, mmgen.load(folder)(prompt=prompt, n=n, sampler=SamplerConfig(seed=seed)))  # sampler.json matters

    assert main(["sample", "--ckpt", str(folder), "--prompt", prompt, "--n", str(n), "--seed", str(seed), "--out", str(tmp_path / "cli.png")]) == 0
    cli = torch.stack([png(tmp_path / "cli" / f"{i:04d}.png") for i in range(n)])

    registry = ModelRegistry(SHIPPED)
    final = list(H.generate(registry, page_request(registry, name, prompt=prompt, n=n, seed=seed)))[-1]
    demo = torch.from_numpy(final.images).permute(0, 3, 1, 2)
    assert torch.equal(api, cli) and torch.equal(api, demo)
    assert json.loads((tmp_path / "cli.json").read_text())["sampler"] == final.settings["sampler"]

    # the demo's "reproduce" command, run as is, makes the same pictures again
    argv = shlex.split(final.settings["command"])[1:] + ["--out", str(tmp_path / "again.png")]
    assert main(argv) == 0
    assert torch.equal(torch.stack([png(tmp_path / "again" / f"{i:04d}.png") for i in range(n)]), api)


def test_video_api_cli_demo_identical(tmp_path):
    name, prompt, n, seed, frames = "shapes-video-nbp", "a green square moving left", 2, 9, 4
    folder = SHIPPED / name
    api = mmgen.load(folder)(prompt=prompt, n=n, seed=seed, frames=frames)  # (n, 3, T, H, W)

    # a .png output is the lossless frame grid: one row per clip, one 32-px column per frame, 2-px borders
    assert main(["sample", "--ckpt", str(folder), "--prompt", prompt, "--n", str(n), "--seed", str(seed), "--frames", str(frames),
                 "--out", str(tmp_path / "cli.png")]) == 0
    grid = png(tmp_path / "cli.png")
    side = api.shape[-1]
    cli = torch.stack([torch.stack([grid[:, 2 + b * (side + 2):][:, :side, 2 + t * (side + 2):][:, :, :side] for t in range(frames)], 1)
                       for b in range(n)])

    registry = ModelRegistry(SHIPPED)
    final = list(H.generate(registry, page_request(registry, name, prompt=prompt, n=n, seed=seed, frames=frames), video=True))[-1]
    demo = torch.from_numpy(final.images).permute(0, 4, 1, 2, 3)
    assert torch.equal(api, cli) and torch.equal(api, demo)
    assert f"--frames {frames}" in final.settings["command"]
