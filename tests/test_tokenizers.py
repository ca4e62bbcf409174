"""Visual tokenizers: contract, gradients, save/load, quantizer mechanics, VAR helpers, training."""
import pytest
import torch

import mmgen
from mmgen.modeling import load_module
from mmgen.registry import preset_info
from mmgen.tokenizers_vis import LPIPS, FlexTokTokenizer, KLTokenizer, MultiScaleVQTokenizer, SubobjectTokenizer, VectorQuantizer
from mmgen.tokenizers_vis.quantizers import CodebookTracker, FSQQuantizer
from mmgen.tokens import FramesLayout, GridLayout, ScalesLayout, SegmentsLayout, SequenceLayout, Tokens

TINY = mmgen.list_models(kind="tokenizer", tag="tiny")
ONE_D = {FlexTokTokenizer: SequenceLayout, SubobjectTokenizer: SegmentsLayout}  # 1D layouts, FSQ codes (no learned codebook)
TINY_VQ = [n for n in TINY if preset_info(n).cls is not KLTokenizer and preset_info(n).cls not in ONE_D
           and not preset_info(n).defaults.get("fsq_levels")]  # learned codebooks
REFERENCE = mmgen.list_models(kind="tokenizer", tag="reference")
GAN = dict(disc_weight=0.5, disc_start=3, disc_adaptive_weight=True, disc_channels=8, disc_layers=2, restart_dead_codes=False)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def blobs(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Black canvases with one pure-colour square each (a cheap stand-in for the shapes world)."""
    g = torch.Generator().manual_seed(seed)
    x = -torch.ones(n, 3, size, size)
    for i in range(n):
        s = int(torch.randint(size // 4, size // 2, (1,), generator=g))
        r, c = torch.randint(0, size - s, (2,), generator=g).tolist()
        x[i, :, r : r + s, c : c + s] = torch.randint(0, 2, (3, 1, 1), generator=g).float() * 2 - 1
    return x


def inputs(tok, n: int, seed: int = 0) -> torch.Tensor:
    """Images, or for a video tokenizer clips of its clip length (the blobs sliding one pixel per frame)."""
    x = blobs(n, seed=seed)
    if isinstance(tok.layout, FramesLayout):
        return torch.stack([x.roll(t, -1) for t in range(tok.config.frames)], 2)
    return x


def test_registry_has_both_kinds():
    assert {"vq-tiny", "msvq-tiny"} <= set(TINY)
    assert {"vq-f16-llamagen", "msvq-var"} <= set(REFERENCE)


@pytest.mark.parametrize("name,params_m", [("vq-f16-llamagen", 72.0), ("msvq-var", 109.0)])
def test_reference_presets_build_on_meta(name, params_m):
    with torch.device("meta"):
        tok = mmgen.create_tokenizer(name)
    assert abs(tok.num_params() / 1e6 - params_m) / params_m < 0.03
    assert tok.downsample == 16 and tok.image_size == 256
    side = tok.layout.scales[-1] if isinstance(tok.layout, ScalesLayout) else tok.layout.h
    assert side == 16


@pytest.mark.parametrize("name", TINY)
def test_loss_backward_every_param(name):
    tok = mmgen.create_tokenizer(name).train()
    x = blobs(4)
    loss, logs = tok.loss(x, step=0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    fsq = type(tok) in ONE_D or bool(getattr(tok.config, "fsq_levels", ()))  # no learned codebook: no commitment
    specific = ("kl_loss",) if isinstance(tok, KLTokenizer) else ("codebook_usage", "perplexity") if fsq else ("commit_loss", "codebook_usage", "perplexity", "dead_codes")
    for key in ("recon_loss", "psnr", "quant_loss") + specific:
        assert key in logs and torch.isfinite(torch.as_tensor(logs[key])), key
    loss.backward()
    missing = [n for n, p in tok.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in tok.parameters())
    assert not any(k.startswith("criterion.") for k in tok.state_dict()), "tiny checkpoints carry no discriminator"


@pytest.mark.parametrize("name", TINY)
def test_encode_decode_shapes_and_layout(name):
    tok = mmgen.create_tokenizer(name).eval()
    x = inputs(tok, 3)
    tokens = tok.encode(x)
    assert isinstance(tokens, Tokens) and tokens.layout == tok.layout
    if isinstance(tok, KLTokenizer):  # continuous latents instead of ids
        assert tokens.ids is None and tokens.latents.shape == (3, tok.layout.num_tokens, tok.codebook_dim)
    else:
        assert tokens.ids.shape == (3, tok.layout.num_tokens) and tokens.ids.dtype == torch.long
        assert 0 <= int(tokens.ids.min()) and int(tokens.ids.max()) < tok.vocab_size
    expected = ONE_D.get(type(tok)) or (ScalesLayout if isinstance(tok, MultiScaleVQTokenizer) else FramesLayout if x.ndim == 5 else GridLayout)
    assert isinstance(tok.layout, expected)
    if expected is GridLayout:
        assert tok.layout == GridLayout(32 // tok.downsample, 32 // tok.downsample)
    y = tok.decode(tokens)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    if tokens.ids is not None:
        assert tok.embed_ids(tokens.ids).shape == (3, tok.layout.num_tokens, tok.codebook_dim)


@pytest.mark.parametrize("name", TINY)
def test_save_load_round_trip(name, tmp_path):
    tok = mmgen.create_tokenizer(name).train()
    opt = torch.optim.AdamW(tok.parameters(), 1e-3)
    for step in range(2):  # move weights and codebook counters away from their init
        loss, _ = tok.loss(blobs(4, seed=step), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    tok.eval().save_pretrained(tmp_path / "ckpt")
    back = load_module(tmp_path / "ckpt")
    assert type(back) is type(tok) and back.config == tok.config
    x = blobs(2, seed=5)
    a, b = tok.encode(x), back.encode(x)
    assert torch.equal(a.ids, b.ids) if a.ids is not None else torch.equal(a.latents, b.latents)
    assert torch.equal(tok.decode(a), back.decode(b))


@pytest.mark.parametrize("name", TINY)
def test_bad_inputs_raise(name):
    tok = mmgen.create_tokenizer(name).eval()
    with pytest.raises(ValueError, match="configured for 32x32"):
        tok.encode(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="rank"):
        tok.encode(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="3 channels"):
        tok.encode(torch.zeros(1, 1, 32, 32))
    if isinstance(tok, KLTokenizer):
        z = tok.encode(torch.zeros(1, 3, 32, 32)).latents
        with pytest.raises(ValueError, match="latents must be"):
            tok.decode(z[..., :-1])
        with pytest.raises(ValueError, match="latents must be"):
            tok.decode(z[:, :-1])
        return
    tokens = tok.encode(inputs(tok, 1))
    ids = tokens.ids
    with pytest.raises(ValueError, match="must lie in"):
        tok.decode(Tokens(layout=tokens.layout, ids=ids + tok.vocab_size))
    with pytest.raises(ValueError, match="ids must be"):  # a 1D sequence may be shorter, never longer
        tok.decode(torch.cat([ids, ids[:, :1]], 1) if type(tok) in ONE_D else ids[:, :-1])


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="last scale"):
        mmgen.create_tokenizer("msvq-tiny", scales=[1, 2, 4])
    with pytest.raises(ValueError, match="increasing"):
        mmgen.create_tokenizer("msvq-tiny", scales=[1, 3, 2, 8])
    with pytest.raises(ValueError, match="norm_num_groups"):
        mmgen.create_tokenizer("vq-tiny", norm_num_groups=7)
    with pytest.raises(ValueError, match="multiple"):
        mmgen.create_tokenizer("vq-tiny", image_size=30)
    with pytest.raises(ValueError, match="cannot be downloaded"):
        mmgen.create_tokenizer("vq-tiny", perceptual_weight=1.0)


@pytest.mark.parametrize("l2_norm", [True, False])
def test_quantizer_nearest_and_straight_through(l2_norm):
    q = VectorQuantizer(32, 4, l2_norm=l2_norm)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = q(z)
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    cb = q.codebook().detach()
    if l2_norm:
        flat = torch.nn.functional.normalize(flat, dim=-1)
    assert torch.equal(out.ids.reshape(-1), torch.cdist(flat, cb).argmin(1))
    values = out.quantized.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    torch.testing.assert_close(values, cb[out.ids.reshape(-1)])
    w = torch.randn_like(out.quantized)
    (grad,) = torch.autograd.grad((out.quantized * w).sum(), z)
    if not l2_norm:  # identity Jacobian: the decoder's gradient reaches the encoder unchanged
        torch.testing.assert_close(grad, w)
    else:  # gradient of the normalisation only
        zz = z.detach().clone().requires_grad_(True)
        (ref,) = torch.autograd.grad((torch.nn.functional.normalize(zz, dim=1) * w).sum(), zz)
        torch.testing.assert_close(grad, ref)


def test_fsq_quantizer_matches_fsq_and_checks_its_config():
    q = FSQQuantizer((8, 5, 5, 5))
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = q(z, update_stats=True)
    codes, ids = q.fsq(z.detach().permute(0, 2, 3, 1))
    assert torch.equal(out.ids, ids.reshape(2, 9)) and out.loss.item() == 0.0
    torch.testing.assert_close(out.quantized.detach(), codes.permute(0, 3, 1, 2))
    torch.testing.assert_close(q.lookup(out.ids), codes.reshape(2, 9, 4))  # ids -> the same code vectors
    out.quantized.sum().backward()
    assert z.grad is not None and (z.grad != 0).any()  # straight-through reaches the encoder
    tok = mmgen.create_tokenizer("vq-tiny", fsq_levels=(4, 4, 4), codebook_size=64, codebook_dim=3, restart_dead_codes=False)
    x = blobs(2)
    tokens = tok.encode(x)
    assert tok.vocab_size == 64 and int(tokens.ids.max()) < 64 and tok.decode(tokens).shape == x.shape
    with pytest.raises(ValueError, match="codebook_size=64 and codebook_dim=3"):
        mmgen.create_tokenizer("vq-tiny", fsq_levels=(4, 4, 4), restart_dead_codes=False)
    with pytest.raises(ValueError, match="no codebook to restart"):
        mmgen.create_tokenizer("vq-tiny", fsq_levels=(4, 4, 4), codebook_size=64, codebook_dim=3, restart_dead_codes=True)


def _dominated_quantizer() -> VectorQuantizer:
    """16 codes of which code 0 wins for every positive input, so the 15 others never get used."""
    q = VectorQuantizer(16, 4, l2_norm=False, dead_after=2, restart_dead=True)
    with torch.no_grad():
        q.embedding.weight.zero_()
        q.embedding.weight[0] = 1.0
    return q


def test_dead_code_restart_is_tracked_and_deterministic():
    q = _dominated_quantizer()
    z = torch.rand(2, 4, 2, 2) + 0.6
    for _ in range(2):
        logs = q(z, update_stats=True).logs
    assert float(logs["restarted_codes"]) == 0 and float(logs["dead_codes"]) == 15
    assert float(logs["codebook_usage"]) == 1 / 16
    before = {k: v.clone() for k, v in q.state_dict().items()}
    q(z)  # encode-style calls (no update_stats) never count or restart
    assert torch.equal(q.tracker.unused_steps, before["tracker.unused_steps"])
    torch.manual_seed(1)
    logs = q(z, update_stats=True).logs
    after = q.embedding.weight.detach().clone()
    assert float(logs["restarted_codes"]) == 15
    assert torch.equal(after[0], before["embedding.weight"][0]), "a live code must not move"
    cands = z.permute(0, 2, 3, 1).reshape(-1, 4)
    assert all((cands == row).all(1).any() for row in after[1:]), "restarted codes come from the batch"
    assert int(q.tracker.unused_steps.max()) <= 1, "restarted codes get a fresh grace period"
    q2 = _dominated_quantizer()
    q2.load_state_dict(before)
    torch.manual_seed(1)
    q2(z, update_stats=True)
    assert torch.equal(q2.embedding.weight, after), "restart is deterministic given torch's RNG"


@pytest.mark.parametrize("name", TINY_VQ)
def test_tokenizer_restarts_dead_codes_and_still_trains(name):
    tok = mmgen.create_tokenizer(name, dead_code_steps=1).train()
    x = blobs(4)
    tok.loss(x)  # every code this batch did not pick is now dead
    w0 = tok.quantizer.embedding.weight.detach().clone()
    loss, logs = tok.loss(x)
    n = int(logs["restarted_codes"])
    assert 0 < n < tok.vocab_size
    loss.backward()  # restarting before the lookup keeps autograd valid
    assert torch.isfinite(tok.quantizer.embedding.weight.grad).all()
    assert int((tok.quantizer.embedding.weight.detach() != w0).any(1).sum()) == n


def test_tracker_perplexity():
    t = CodebookTracker(8, dead_after=5)
    s = t.batch_stats(torch.tensor([0, 1, 2, 3]))
    assert float(s["codebook_usage"]) == 0.5 and abs(float(s["perplexity"]) - 4.0) < 1e-4


def test_gan_gradients_are_separated():
    tok = mmgen.create_tokenizer("vq-tiny", **GAN).train()
    disc = tok.criterion.discriminator
    assert disc is not None and any(k.startswith("criterion.discriminator.") for k in tok.state_dict())
    x = blobs(4)
    loss, logs = tok.loss(x, step=0)  # before disc_start: no GAN terms at all
    loss.backward()
    assert "d_loss" not in logs and all(p.grad is None for p in disc.parameters())
    tok.zero_grad(set_to_none=True)

    def grads(d_scale: float) -> dict[str, torch.Tensor]:
        tok.zero_grad(set_to_none=True)
        orig = type(tok.criterion).disc_loss
        tok.criterion.disc_loss = lambda x, r: tuple(v * d_scale if i == 0 else v for i, v in enumerate(orig(tok.criterion, x, r)))
        try:
            loss, logs = tok.loss(x, step=5)
        finally:
            del tok.criterion.disc_loss
        assert torch.isfinite(loss) and "d_loss" in logs and "g_loss" in logs
        loss.backward()
        return {n: p.grad.clone() for n, p in tok.named_parameters() if p.grad is not None}

    full = grads(1.0)
    assert set(full) == {n for n, p in tok.named_parameters() if p.requires_grad}, "every parameter gets a gradient"
    no_d = grads(0.0)
    for n, g in full.items():
        if n.startswith("criterion.discriminator."):
            assert n not in no_d or torch.count_nonzero(no_d[n]) == 0, f"{n} got gradient from the generator's term"
        else:
            torch.testing.assert_close(g, no_d[n], msg=f"{n} got gradient from the discriminator's loss")
    # the discriminator's gradient is exactly that of its own hinge loss
    tok.zero_grad(set_to_none=True)
    with torch.no_grad():
        recon = tok.reconstruct(x)
    tok.criterion.disc_loss(x, recon)[0].backward()
    for n, p in disc.named_parameters():
        torch.testing.assert_close(full[f"criterion.discriminator.{n}"], p.grad)


def test_perceptual_loss_from_local_file(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    with torch.device("meta"):
        feats = torchvision.models.vgg16(weights=None).features[:30]
    state = {f"features.{k}": torch.randn(v.shape) * 0.05 for k, v in feats.state_dict().items()}
    save_file(state, str(tmp_path / "vgg.safetensors"))
    lp = LPIPS(tmp_path / "vgg.safetensors")
    assert not list(lp.parameters()) or not any(p.requires_grad for p in lp.parameters())
    x = blobs(2)
    y = x + 0.3 * torch.randn_like(x)
    assert float(lp(x, x)) < 1e-6 and float(lp(x, y)) > 0
    tok = mmgen.create_tokenizer("vq-tiny", perceptual_weight=1.0, perceptual_weights=str(tmp_path / "vgg.safetensors"))
    loss, logs = tok.train().loss(x)
    loss.backward()
    assert "perceptual_loss" in logs and float(logs["perceptual_loss"]) > 0
    assert not any("vgg" in k or "slices" in k for k in tok.state_dict()), "VGG stays out of checkpoints"
    bad = mmgen.create_tokenizer("vq-tiny", perceptual_weight=1.0, perceptual_weights=str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match="cannot be downloaded"):
        bad.loss(x)


def test_msvq_sampling_helpers_match_encode_decode():
    tok = mmgen.create_tokenizer("msvq-tiny").eval()
    x = blobs(3)
    with torch.no_grad():
        q = tok.quantize(x)
        ids = q.ids
        f_hat = tok.empty_fhat(3)
        nexts = []
        for si, ids_si in enumerate(tok.layout.split(ids)):
            f_hat, nxt = tok.next_scale_input(si, f_hat, ids_si)
            if si < len(tok.scales) - 1:
                s = tok.scales[si + 1]
                assert nxt.shape == (3, s * s, tok.codebook_dim)
                nexts.append(nxt)
            else:
                assert nxt is None
        assert torch.equal(f_hat, tok.ids_to_fhat(ids))  # exactly what decode uses
        torch.testing.assert_close(f_hat, q.f_hat, atol=1e-5, rtol=1e-5)  # and what training saw
        assert torch.equal(tok.decode(Tokens(layout=tok.layout, ids=ids)), tok.decode_fhat(f_hat))
        var_in = tok.ids_to_var_input(ids)
        assert var_in.shape == (3, tok.layout.num_tokens - tok.scales[0] ** 2, tok.codebook_dim)
        assert torch.equal(var_in, torch.cat(nexts, 1))
        # embeddings instead of ids give the same step
        e0 = tok.embed_ids(tok.layout.split(ids)[1])
        a, _ = tok.next_scale_input(1, tok.empty_fhat(3), tok.layout.split(ids)[1])
        b, _ = tok.next_scale_input(1, tok.empty_fhat(3), e0)
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="scale index"):
        tok.next_scale_input(len(tok.scales), f_hat, ids[:, :1])
    with pytest.raises(ValueError, match="expects ids of shape"):
        tok.next_scale_input(1, f_hat, ids[:, :1])


def test_short_training_reduces_reconstruction_loss():
    torch.manual_seed(0)
    tok = mmgen.create_tokenizer("vq-tiny").train()
    held_out = blobs(32, seed=123)

    def recon_loss() -> float:
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(tok.reconstruct(held_out), held_out))

    before = recon_loss()
    opt = torch.optim.AdamW(tok.parameters(), lr=2e-3, weight_decay=0.0)
    for step in range(60):
        loss, _ = tok.loss(blobs(16, seed=1000 + step), step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    after = recon_loss()
    assert after < 0.3 * before, (before, after)
