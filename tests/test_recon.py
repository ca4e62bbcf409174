"""Tokenizer reconstruction metrics: PSNR, SSIM (against scikit-image), codebook usage, rFID."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mmgen.cli import main
from mmgen.eval.recon import codebook_usage, evaluate_tokenizer, load_tokenizer, psnr, ssim
from mmgen.tokens import GridLayout, Tokens

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "shapes-raster"


def test_psnr_known_value_and_skimage():
    x = torch.zeros(2, 3, 16, 16)
    y = x + 0.1  # MSE 0.01 on a peak-to-peak range of 2
    torch.testing.assert_close(psnr(y, x), torch.full((2,), 10 * np.log10(4 / 0.01), dtype=torch.float64))
    metrics = pytest.importorskip("skimage.metrics")
    a, b = torch.rand(1, 3, 16, 16) * 2 - 1, torch.rand(1, 3, 16, 16) * 2 - 1
    assert psnr(a, b).item() == pytest.approx(metrics.peak_signal_noise_ratio(a[0].numpy(), b[0].numpy(), data_range=2), rel=1e-6)


def test_ssim_matches_skimage_and_orders_noise():
    metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 24, 20, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    got = ssim(y, x)
    want = [metrics.structural_similarity(y[i].numpy(), x[i].numpy(), data_range=2, channel_axis=0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
            for i in range(3)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))
    worse = (x + 0.6 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    assert (ssim(worse, x) < got).all()
    with pytest.raises(ValueError, match="window"):
        ssim(x[..., :8, :8], x[..., :8, :8])


def test_codebook_usage_and_perplexity():
    half = torch.arange(32).repeat(10)  # 32 of 64 codes, equally often
    u = codebook_usage(half, 64)
    assert u["codebook_usage"] == pytest.approx(0.5) and u["perplexity"] == pytest.approx(32.0)
    skewed = codebook_usage(torch.tensor([0] * 90 + list(range(1, 11))), 64)
    assert 1.0 < skewed["perplexity"] < 11 and skewed["codebook_usage"] == pytest.approx(11 / 64)
    with pytest.raises(ValueError, match="ids must lie"):
        codebook_usage(torch.tensor([0, 64]), 64)


class EchoTokenizer(nn.Module):
    """Reconstructs its input (plus optional noise); ids are a fixed pattern over half the codebook."""

    image_size, vocab_size = 32, 16

    def __init__(self, noise: float = 0.0):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.noise, self.last = noise, None

    def encode(self, x):
        self.last = x
        return Tokens(GridLayout(2, 2), ids=torch.arange(4).repeat(len(x), 1) * 2)

    def decode(self, tokens):
        return self.last + self.noise * torch.randn_like(self.last)


def test_evaluate_tokenizer_perfect_reconstruction_has_zero_rfid():
    res = evaluate_tokenizer(EchoTokenizer(), "shapes", n=8, batch_size=5, progress=False)
    assert res["n"] == 8 and res["psnr_db"] > 100 and res["ssim"] == pytest.approx(1.0)
    assert abs(res["rfid"]) < 1e-6 and len(res["inception"]["sha256"]) == 64
    assert res["codebook_usage"] == pytest.approx(4 / 16) and res["perplexity"] == pytest.approx(4.0) and res["tokens_per_image"] == 4
    noisy = evaluate_tokenizer(EchoTokenizer(noise=0.1), "shapes", n=8, rfid=False, progress=False)
    assert 15 < noisy["psnr_db"] < 30 and noisy["ssim"] < 0.9 and noisy["rfid"] is None


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="shipped checkpoint not present")
def test_shipped_tokenizer_reconstructs_well_and_cli(tmp_path, capsys):
    tok, path = load_tokenizer(SHIPPED)  # a pipeline folder resolves to its tokenizer/
    assert path.name == "tokenizer"
    res = evaluate_tokenizer(tok, "shapes", n=16, rfid=False, progress=False, tokenizer_path=path)
    assert res["psnr_db"] > 30 and res["ssim"] > 0.9 and res["perplexity"] > 10
    assert res["codebook_usage"] * tok.vocab_size >= res["perplexity"]  # exp(entropy) never exceeds the codes used
    assert res["tokenizer"]["class"] == tok.__class__.__name__ and len(res["tokenizer"]["sha256"]) == 64

    out = tmp_path / "recon.json"
    assert main(["eval", "recon", "--tokenizer", str(path), "--data", "shapes", "--n", "16", "--no-rfid", "--json", str(out)]) == 0
    cli = json.loads(out.read_text())
    assert cli["psnr_db"] == pytest.approx(res["psnr_db"]) and cli["tokenizer"]["path"] == str(path.resolve())
    assert main(["eval", "recon", "--tokenizer", str(tmp_path / "nope"), "--data", "shapes", "--json", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
