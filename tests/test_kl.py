"""The continuous KL tokenizer: posterior, latent scaling, KL term, save/load, short training."""
import pytest
import torch
from test_tokenizers import blobs

import mmgen
from mmgen.modeling import load_module
from mmgen.models.base import tokenizer_overrides
from mmgen.tokens import GridLayout, Tokens

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_reference_preset_is_ldm_kl16():
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        tok = mmgen.create_tokenizer("kl-f16-mar")
        ref = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4 + ("AttnDownEncoderBlock2D",),
                            up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 4,
                            block_out_channels=(128, 128, 256, 256, 512), layers_per_block=2, latent_channels=16)
    n_ref = sum(p.numel() for p in ref.parameters())
    assert abs(tok.num_params() - n_ref) / n_ref < 0.005, (tok.num_params(), n_ref)
    assert tok.layout == GridLayout(16, 16) and tok.codebook_dim == 16 and tok.vocab_size == 0


def test_encode_is_the_posterior_mean_and_decode_inverts_the_scaling():
    tok = mmgen.create_tokenizer("kl-tiny").eval()
    x = blobs(4)
    a, b = tok.encode(x), tok.encode(x)
    assert a.ids is None and a.latents.shape == (4, 64, 4) and torch.equal(a.latents, b.latents)
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(tok.encode(x, sample=True, generator=g).latents, a.latents)
    before = tok.decode(a)
    mean, std = tok.calibrate(x)
    z = tok.encode(x).latents
    assert mean.shape == std.shape == (4,)
    assert z.mean((0, 1)).abs().max() < 1e-4 and (z.std((0, 1)) - 1).abs().max() < 1e-4  # unit variance per channel
    torch.testing.assert_close(tok.scaling_factor, 1 / std)
    torch.testing.assert_close(tok.decode(tok.encode(x)), before, atol=1e-5, rtol=0)  # the scaling cancels
    assert before.shape == x.shape and before.min() >= -1 and before.max() <= 1


def test_running_latent_stats_and_kl_term():
    tok = mmgen.create_tokenizer("kl-tiny", kl_weight=0.5).train()
    x = blobs(4)
    loss, logs = tok.loss(x)
    assert int(tok.stats_updates) == 1
    torch.testing.assert_close(tok.latent_std.mean(), logs["latent_std"])
    torch.testing.assert_close(tok.latent_mean.mean(), logs["latent_mean"])
    assert float(logs["kl_loss"]) > 0 and torch.isclose(logs["quant_loss"], 0.5 * logs["kl_loss"])
    loss.backward()
    assert all(p.grad is not None for p in tok.parameters())
    tok.eval()
    tok.loss(blobs(4, seed=1))
    tok.encode(x)
    assert int(tok.stats_updates) == 1, "only training updates the latent statistics"


def test_save_load_keeps_the_latent_scaling(tmp_path):
    tok = mmgen.create_tokenizer("kl-tiny").eval()
    tok.calibrate(blobs(8))
    tok.save_pretrained(tmp_path / "kl")
    back = load_module(tmp_path / "kl")
    x = blobs(2, seed=3)
    assert torch.equal(back.latent_std, tok.latent_std) and torch.equal(back.latent_mean, tok.latent_mean)
    assert torch.equal(back.encode(x).latents, tok.encode(x).latents)


def test_bad_configs_and_tokens():
    with pytest.raises(ValueError, match="latent_channels"):
        mmgen.create_tokenizer("kl-tiny", latent_channels=0)
    with pytest.raises(ValueError, match="kl_weight"):
        mmgen.create_tokenizer("kl-tiny", kl_weight=-1.0)
    tok = mmgen.create_tokenizer("kl-tiny")
    with pytest.raises(ValueError, match="ids only"):
        tok.decode(Tokens(GridLayout(8, 8), ids=torch.zeros(1, 64, dtype=torch.long)))


def test_generators_bind_by_their_token_kind():
    tok = mmgen.create_tokenizer("kl-tiny")
    assert tokenizer_overrides(tok) == {"vocab_size": 0, "layout": {"type": "grid", "h": 8, "w": 8}, "token_dim": 4, "image_size": 32}
    mmgen.create_generator("xar-tiny", **tokenizer_overrides(tok)).bind_tokenizer(tok)
    with pytest.raises(ValueError, match="does not match"):
        mmgen.create_generator("raster-tiny").bind_tokenizer(tok)


def test_short_training_reduces_reconstruction_loss():
    torch.manual_seed(0)
    tok = mmgen.create_tokenizer("kl-tiny").train()
    held_out = blobs(32, seed=123)

    def recon_loss() -> float:
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(tok.eval().reconstruct(held_out), held_out))

    before = recon_loss()
    tok.train()
    opt = torch.optim.AdamW(tok.parameters(), lr=2e-3, weight_decay=0.0)
    for step in range(60):
        loss, _ = tok.loss(blobs(16, seed=1000 + step), step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    after = recon_loss()
    assert after < 0.3 * before, (before, after)
