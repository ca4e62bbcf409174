"""FlexTok: nested dropout, causal registers, every prefix decodes, training, CFG, autoencoder space, bad k."""
import copy

import pytest
import torch

import mmgen
from mmgen.modeling import load_module
from mmgen.tokens import SequenceLayout, Tokens

SMALL = dict(num_registers=8, encoder=dict(dim=32, depth=1, heads=2), decoder=dict(dim=32, depth=2, heads=2), flow_steps=2)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def blobs(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = -torch.ones(n, 3, 32, 32)
    for i in range(n):
        s = int(torch.randint(8, 16, (1,), generator=g))
        r, c = torch.randint(0, 32 - s, (2,), generator=g).tolist()
        x[i, :, r : r + s, c : c + s] = torch.randint(0, 2, (3, 1, 1), generator=g).float() * 2 - 1
    return x


def small(**kw):
    return mmgen.create_tokenizer("flextok-tiny", **{**SMALL, **kw})


def test_nested_dropout_masks_only_the_tail():
    tok = small()
    codes = tok.fsq.ids_to_codes(torch.randint(0, tok.vocab_size, (2, 8)))
    for k in (1, 3, 8):
        keep = (torch.arange(8) < k).expand(2, 8)
        regs = tok._registers_in(codes, keep)
        masked = tok.mask_token + tok.reg_pos
        torch.testing.assert_close(regs[:, k:], masked[k:].expand(2, -1, -1))  # the tail is the mask token
        assert not torch.allclose(regs[:, :k], masked[:k].expand(2, -1, -1))  # the kept head carries the codes
    torch.manual_seed(0)
    ks = tok.train().sample_keep(4000, "cpu")
    assert set(ks.tolist()) == set(range(0, 9)), "k uniform in 1..K, plus k = 0 (null) for CFG"
    assert abs(float((ks == 0).float().mean()) - tok.config.null_prob) < 0.03
    ks = small(keep_k="pow2").sample_keep(2000, "cpu")
    assert set(ks.tolist()) <= {0, 1, 2, 4, 8}
    ks = small(keep_k="pow2", keep_weights=[3, 1, 0, 0]).sample_keep(4000, "cpu")
    assert set(ks.tolist()) == {0, 1, 2}, "a prefix size of weight 0 is never drawn"
    assert abs(float((ks == 1).float().mean()) / float((ks == 2).float().mean()) - 3) < 0.5
    for bad in (dict(keep_weights=[1, 1, 1, 1]), dict(keep_k="pow2", keep_weights=[1, 1]),
                dict(keep_k="pow2", keep_weights=[0, 0, 0, 0]), dict(keep_k="pow2", keep_weights=[1, -1, 1, 1])):
        with pytest.raises(ValueError, match="keep_weights"):
            small(**bad)


def test_registers_are_causal_and_prefixes_are_consistent():
    tok = small().eval()
    x = blobs(3)
    full = tok.encode(x)
    assert full.layout == SequenceLayout(8) and full.ids.shape == (3, 8)
    for k in (1, 5, 8):
        t = tok.encode(x, k=k)
        assert t.layout == SequenceLayout(k) and torch.equal(t.ids, full.ids[:, :k])
        assert torch.equal(full.prefix(k).ids, t.ids)
    with torch.no_grad():  # a later register never changes an earlier one (Causal(prefix=patches))
        torch.nn.init.normal_(tok.to_code.weight)
        before = tok._encode(x)[0]
        tok.registers[5:].add_(1.0)
        after = tok._encode(x)[0]
    torch.testing.assert_close(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5:], after[:, 5:])


def test_decode_works_for_every_k_and_is_deterministic():
    tok = small().eval()
    x = blobs(2)
    t = tok.encode(x)
    outs = []
    for k in range(1, 9):
        y = tok.decode(t.prefix(k))
        assert y.shape == (2, 3, 32, 32) and y.min() >= -1 and y.max() <= 1 and torch.isfinite(y).all()
        outs.append(y)
    assert torch.equal(tok.decode(t.ids[:, :3]), outs[2]), "a plain (B, k) id tensor decodes like Tokens"
    assert torch.equal(tok.decode(t), tok.decode(t)), "decoding starts from seeded noise"
    assert not torch.equal(tok.decode(t, seed=1), tok.decode(t))
    assert tok.decode(t, steps=3, cfg_scale=3.0).shape == (2, 3, 32, 32)


def test_decode_noise_scale_shrinks_the_start_noise_and_zero_ignores_the_seed():
    tok = small(flow_steps=1).eval()  # one Euler step: x = noise - v(noise), so the noise scale is visible
    t = tok.encode(blobs(2))
    zero = tok.decode(t, noise_scale=0.0)
    assert torch.equal(zero, tok.decode(t, noise_scale=0.0, seed=7)), "no start noise: the seed has nothing to draw"
    assert not torch.equal(tok.decode(t, noise_scale=0.5), tok.decode(t))
    assert torch.equal(tok.decode(t, noise_scale=1.0), tok.decode(t)), "1 is the default: the plain flow sample"
    low = small(flow_steps=1, decode_noise_scale=0.0)
    low.load_state_dict(tok.state_dict())
    assert torch.equal(low.eval().decode(t), zero), "the config's decode_noise_scale is decode()'s default"
    with pytest.raises(ValueError, match="noise_scale"):
        tok.decode(t, noise_scale=-0.1)
    with pytest.raises(ValueError, match="decode_noise_scale"):
        small(decode_noise_scale=-1.0)


def test_bad_k_and_bad_ids_are_clear_errors():
    tok = small().eval()
    x = blobs(1)
    for k in (0, 9, -1):
        with pytest.raises(ValueError, match=r"k=.* out of range.*1\.\.8"):
            tok.encode(x, k=k)
    ids = tok.encode(x).ids
    with pytest.raises(ValueError, match="k out of range"):
        tok.decode(torch.cat([ids, ids], 1))
    with pytest.raises(ValueError, match="k out of range"):
        tok.decode(ids[:, :0])
    with pytest.raises(ValueError, match=r"must lie in \[0, 1000\)"):
        tok.decode(ids + 1000)
    with pytest.raises(ValueError, match="SequenceLayout"):
        tok.decode(Tokens(mmgen.tokens.GridLayout(2, 4), ids=ids))
    with pytest.raises(ValueError, match="out of range"):
        SequenceLayout(8).truncate(9)
    with pytest.raises(ValueError, match="steps"):
        tok.decode(ids, steps=0)
    with pytest.raises(ValueError, match="levels"):
        small(levels=[8, 1])


def test_tiny_training_lowers_the_loss():
    torch.manual_seed(0)
    tok = small(num_registers=4, decoder=dict(dim=48, depth=2, heads=2)).train()
    held = blobs(16, seed=99)

    def flow_loss() -> float:
        torch.manual_seed(123)  # same k, t and noise every time
        with torch.no_grad():
            return float(tok.loss(held)[0])

    before = flow_loss()
    opt = torch.optim.AdamW(tok.parameters(), lr=3e-3)
    for step in range(40):
        loss, _ = tok.loss(blobs(16, seed=step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = flow_loss()
    assert after < 0.6 * before, (before, after)


def test_autoencoder_latent_space_and_reload(tmp_path):
    kl = mmgen.create_tokenizer("kl-tiny").eval()
    kl.save_pretrained(tmp_path / "kl")
    tok = small(autoencoder=str(tmp_path / "kl"), patch_size=2)
    assert (tok.config.in_channels, tok.config.grid_size) == (kl.codebook_dim, kl.latent_size)
    assert tok.num_patches == (kl.latent_size // 2) ** 2
    assert not any(p.requires_grad for p in tok.autoencoder.parameters())
    loss, _ = tok.train().loss(blobs(2))
    loss.backward()
    assert tok.autoencoder.training is False
    tok.eval().save_pretrained(tmp_path / "ft")
    (tmp_path / "kl" / "model.safetensors").unlink()  # the checkpoint is self-contained
    back = load_module(tmp_path / "ft")
    x = blobs(2, seed=3)
    assert torch.equal(tok.decode(tok.encode(x, k=3)), back.decode(back.encode(x, k=3)))
    with pytest.raises(ValueError, match="no autoencoder"):  # a latent-space preset needs its autoencoder
        mmgen.create_tokenizer("flextok-tiny", in_channels=4, grid_size=8, patch_size=1, **SMALL).encode(x)


def test_reference_presets_build_on_meta():
    with torch.device("meta"):
        tok = mmgen.create_tokenizer("flextok-d18-d18")
    assert tok.layout == SequenceLayout(256) and tok.vocab_size == 64000 and tok.codebook_dim == 6
    assert tok.num_patches == 256 and tok.config.encoder.dim == 1152
    assert 650e6 < tok.num_params() < 800e6


def test_photos_world_is_real_deterministic_and_holds_out_test_photos():
    from mmgen.data import build_dataset
    from mmgen.data.photos import PHOTOS, TEST_PHOTOS

    train, test = build_dataset("photos", size=24, seed=3), build_dataset("photos", size=24, seed=3, split="test")
    a, b = train[7], build_dataset("photos", size=24, seed=3)[7]
    assert a["pixels"].shape == (3, 24, 24) and torch.equal(a["pixels"], b["pixels"])
    assert a["pixels"].min() >= -1 and a["pixels"].max() <= 1 and a["pixels"].std() > 0.01
    assert {PHOTOS[test[i]["label"]] for i in range(40)} <= set(TEST_PHOTOS)
    assert not {PHOTOS[train[i]["label"]] for i in range(40)} & set(TEST_PHOTOS)
    with pytest.raises(ValueError, match="split"):
        build_dataset("photos", split="val")


def test_fsq_dropout_and_x_prediction_paths():
    tok = small(fsq_dropout=1.0, prediction="x")
    x = blobs(2)
    with torch.no_grad():
        torch.nn.init.normal_(tok.to_code.weight)
        grid_codes = tok.eval()._encode(x)[0]
        raw = tok.train()._encode(x)[0]
    assert torch.equal(grid_codes, tok.fsq.ids_to_codes(tok.fsq.codes_to_ids(grid_codes))), "eval codes are on the grid"
    assert not torch.equal(raw, grid_codes), "training codes skip rounding with fsq_dropout=1"
    loss, _ = tok.loss(x)
    loss.backward()
    assert torch.isfinite(loss)
    assert tok.eval().decode(tok.encode(x, k=2)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="fsq_dropout"):
        small(fsq_dropout=1.5)


def test_noise_draws_encode_once_and_equal_a_repeated_batch():
    torch.manual_seed(0)
    tok = small(noise_draws=3, null_prob=0.0, fsq_dropout=0.0)
    x = blobs(2)
    calls = []
    tok.enc.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    torch.manual_seed(2)
    a, logs = tok.loss(x)
    assert calls == [2], "each image is encoded once, whatever the number of draws"
    assert torch.isfinite(a) and logs["keep_k"] > 0
    # three draws per image = one draw for each of three copies of the batch (same encoder, same noise)
    one = small(noise_draws=1, null_prob=0.0, fsq_dropout=0.0)
    one.load_state_dict(tok.state_dict())
    torch.manual_seed(2)
    b, _ = one.loss(x.repeat(3, 1, 1, 1))
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="noise_draws"):
        small(noise_draws=0)


def test_pure_noise_prob_puts_that_share_of_training_at_t_one():
    torch.manual_seed(0)
    t = small(pure_noise_prob=0.5, time_shift=3.0).sample_t(4000, "cpu")
    share = (t == 1.0).float().mean().item()
    assert 0.45 < share < 0.55 and bool((t[t < 1] > 0).all())
    assert (small().sample_t(4000, "cpu") == 1.0).sum() == 0, "off by default"
    with pytest.raises(ValueError, match="pure_noise_prob"):
        small(pure_noise_prob=1.0)


def test_register_std_sets_the_register_init_scale():
    assert 0.8 < small().registers.std().item() < 1.2, "the tiny preset starts registers at std 1"
    assert small(register_std=0.02).registers.std().item() < 0.05


@pytest.mark.parametrize("abs_pos", [False, True])
def test_abs_pos_lets_identical_decoder_patches_know_where_they_are(abs_pos):
    # Pure-noise start of decoding, all patches equal, no token kept: with RoPE alone every patch reads the same
    # values, so only absolute positions can make the decoder's outputs differ from patch to patch.
    tok = small(abs_pos=abs_pos).eval()
    torch.nn.init.normal_(tok.out.weight)  # the zero-initialised readout would hide the hidden states
    K, pd = tok.num_registers, 3 * tok.config.patch_size**2
    regs = tok._registers_in(torch.zeros(1, K, tok.codebook_dim), torch.zeros(1, K, dtype=torch.bool))
    with torch.no_grad():
        out = tok.predict(regs, torch.zeros(1, tok.num_patches, pd), torch.ones(1))
    spread = out.std(1).max().item()
    assert (spread > 1e-2) if abs_pos else (spread < 1e-4)


def test_constructor_completes_its_own_copy_of_the_config():
    tok = small()
    config = copy.deepcopy(tok.config)
    config.decoder.adaln_dim, config.levels = 0, list(config.levels)
    before = copy.deepcopy(config)
    again = type(tok)(config)
    assert config == before  # the caller's config is left as given
    assert again.config.decoder.adaln_dim == again.config.decoder.dim  # the model's copy is completed


def test_repa_aligns_decoder_states_to_a_frozen_teacher_that_is_not_saved(tmp_path):
    teacher = mmgen.create_tokenizer("kl-tiny").eval()
    teacher.save_pretrained(tmp_path / "teacher")
    dim = teacher.encoder(blobs(1)).shape[1]
    tok = small(repa_weight=0.5, repa_teacher=str(tmp_path / "teacher"), repa_dim=dim).train()
    torch.nn.init.normal_(tok.dec.blocks[0].ada.proj[1].weight, std=0.1)  # open the adaLN-zero gates of block 1
    torch.manual_seed(0)
    loss, logs = tok.loss(blobs(2))
    loss.backward()
    assert -1.0 <= float(logs["repa_loss"]) <= 1.0 and float(logs["loss"]) != float(logs["flow_loss"])
    assert tok.repa_proj[0].weight.grad.abs().sum() > 0 and tok.to_code.weight.grad.abs().sum() > 0  # reaches the encoder
    assert not any(k.startswith("_teacher") or "encoder.conv" in k for k in tok.state_dict()), "the teacher is never saved"
    assert len(tok.dec.blocks[0]._forward_hooks) == 0, "the hook that catches the states is removed"
    with pytest.raises(ValueError, match="repa_dim"):
        small(repa_weight=0.5, repa_teacher=str(tmp_path / "teacher"), repa_dim=dim + 1).loss(blobs(2))
    with pytest.raises(ValueError, match="repa_teacher"):
        small(repa_weight=0.5)


def test_coarse_loss_trains_the_codes_to_redraw_the_layout_and_ignores_dropped_tokens():
    tok = small(coarse_weight=10.0, coarse_size=4).train()
    assert not hasattr(small(), "coarse_head"), "off by default: no extra weights"
    torch.manual_seed(0)
    loss, logs = tok.loss(blobs(2))
    loss.backward()
    assert float(logs["coarse_loss"]) > 0 and float(logs["loss"]) > float(logs["flow_loss"])
    assert tok.coarse_head[2].weight.grad.abs().sum() > 0  # (the codes start at 0: to_code is zero-initialised)
    tok.zero_grad()
    codes, _ = tok._encode(blobs(2))
    tok._coarse_loss(codes, blobs(2), torch.ones(2, 8, dtype=torch.bool)).backward()
    assert tok.to_code.weight.grad.abs().sum() > 0, "the coarse loss alone reaches the encoder"
    # the head reads only the kept prefix: what a dropped register holds cannot change its loss
    codes = tok.fsq.ids_to_codes(torch.randint(0, tok.vocab_size, (2, 8)))
    grid, keep = blobs(2), (torch.arange(8) < 3).expand(2, 8)
    other = codes.clone()
    other[:, 3:] = tok.fsq.ids_to_codes(torch.randint(0, tok.vocab_size, (2, 5)))
    torch.testing.assert_close(tok._coarse_loss(codes, grid, keep), tok._coarse_loss(other, grid, keep))
    assert not torch.allclose(tok._coarse_loss(codes, grid, keep), tok._coarse_loss(other, grid, keep.clone().fill_(True)))
    with pytest.raises(ValueError, match="coarse_size"):
        small(coarse_weight=1.0, coarse_size=5)


def test_detail_weight_counts_edge_patches_more_and_keeps_flat_batches_unweighted():
    tok = small(detail_weight=3.0)
    err = torch.rand(2, 4, 6)
    flat = torch.zeros(2, 4, 6)  # no patch has detail: every weight is 1
    torch.testing.assert_close(tok._weighted_flow(err, flat), err.mean())
    target = torch.zeros(2, 4, 6)
    target[0, 1] = torch.linspace(-1, 1, 6)  # one edge patch
    edge_err, flat_err = torch.zeros_like(err), torch.zeros_like(err)
    edge_err[0, 1], flat_err[0, 2] = 1.0, 1.0  # the same error, on the edge patch or on a flat one
    assert tok._weighted_flow(edge_err, target) > 3 * tok._weighted_flow(flat_err, target)
    torch.testing.assert_close(small()._weighted_flow(edge_err, target), small()._weighted_flow(flat_err, target))
    torch.manual_seed(0)
    loss, logs = tok.train().loss(blobs(2))
    assert torch.isfinite(loss) and float(logs["flow_loss"]) > 0
    with pytest.raises(ValueError, match="detail_weight"):
        small(detail_weight=-1.0)


def test_keep_all_prob_keeps_every_register_in_that_share_of_samples():
    torch.manual_seed(0)
    tok = small(keep_all_prob=0.5, null_prob=0.0)
    ks = tok.sample_keep(4000, "cpu")
    share = (ks == tok.num_registers).float().mean().item()
    assert 0.5 < share < 0.6, "half forced to K, plus K's own 1/K of the uniform rest"
    assert set(ks.tolist()) == set(range(1, 9))
    assert (small(keep_all_prob=0.5).sample_keep(4000, "cpu") == 0).any(), "null_prob still drops every token"
    with pytest.raises(ValueError, match="keep_all_prob"):
        small(keep_all_prob=1.0)


def test_conv_head_starts_as_the_identity_and_then_refines_across_patch_borders(tmp_path):
    plain = small().eval()
    torch.nn.init.normal_(plain.out.weight, std=0.1)
    tok = small(conv_head=8).eval()
    tok.load_state_dict(plain.state_dict(), strict=False)  # a fine-tune starts from a decoder without the head
    ids = plain.encode(blobs(2)).ids
    torch.testing.assert_close(tok.decode(ids), plain.decode(ids))  # zero-initialised last conv: the same decodes
    torch.manual_seed(0)
    loss, _ = tok.train().loss(blobs(2))
    loss.backward()
    assert tok.conv_head.conv_out.weight.grad.abs().sum() > 0
    # once trained, a pixel at a patch's border reads the noisy pixel across it (the linear head reads only its patch)
    torch.nn.init.normal_(tok.conv_head.conv_out.weight, std=0.1)
    p = tok.config.patch_size
    h, temb = torch.randn(1, tok.num_patches, 32), torch.randn(1, 32)
    x_t = torch.zeros(1, 3, 32, 32, requires_grad=True)
    tok.conv_head(h, x_t, torch.zeros(1, 3, 32, 32), temb)[0, :, 0, p - 1].sum().backward()
    assert x_t.grad[0, :, 0, p].abs().sum() > 0 and x_t.grad[0, :, :, p + 3 :].abs().sum() == 0  # three 3x3 convs: 3 pixels
    tok.save_pretrained(tmp_path / "t")
    again = load_module(tmp_path / "t")
    torch.testing.assert_close(again.decode(ids), tok.decode(ids))
    with pytest.raises(ValueError, match="conv_head"):
        small(conv_head=-1)


def test_code_mlp_starts_as_the_identity_and_reads_only_the_kept_codes():
    plain = small().eval()
    torch.nn.init.normal_(plain.out.weight, std=0.1)
    tok = small(code_mlp=16).eval()
    tok.load_state_dict(plain.state_dict(), strict=False)
    ids = plain.encode(blobs(2)).ids
    torch.testing.assert_close(tok.decode(ids), plain.decode(ids))  # zero-initialised last layer: the same decodes
    torch.nn.init.normal_(tok.dec.blocks[0].ada.proj[1].weight, std=0.1)  # open the adaLN-zero gates of block 1
    torch.manual_seed(0)
    loss, _ = tok.train().loss(blobs(2))
    loss.backward()
    assert tok.code_mlp[2].weight.grad.abs().sum() > 0
    torch.nn.init.normal_(tok.code_mlp[2].weight, std=0.1)
    codes = tok.fsq.ids_to_codes(torch.randint(0, tok.vocab_size, (2, 8)))
    other = codes.clone()
    other[:, 3:] = tok.fsq.ids_to_codes(torch.randint(0, tok.vocab_size, (2, 5)))
    keep = (torch.arange(8) < 3).expand(2, 8)
    torch.testing.assert_close(tok._code_summary(codes, keep), tok._code_summary(other, keep))  # dropped codes unseen
    assert not torch.allclose(tok._code_summary(codes, keep.clone().fill_(True)), tok._code_summary(other, keep.clone().fill_(True)))
    assert small()._code_summary(codes, keep) is None, "off by default: no extra weights"
    with pytest.raises(ValueError, match="code_mlp"):
        small(code_mlp=-1)


def test_repa_ids_target_is_a_cross_entropy_on_the_vq_teachers_codes(tmp_path):
    teacher = mmgen.create_tokenizer("vq-tiny").eval()
    teacher.save_pretrained(tmp_path / "teacher")
    n = teacher.encode(blobs(1)).ids.shape[1]
    patch = 32 // int(n**0.5)
    tok = small(patch_size=patch, repa_weight=0.1, repa_target="ids", repa_teacher=str(tmp_path / "teacher"),
                repa_dim=teacher.vocab_size).train()
    torch.manual_seed(0)
    loss, logs = tok.loss(blobs(2))
    loss.backward()
    assert 0 < float(logs["repa_loss"]) and tok.repa_proj[2].weight.grad.abs().sum() > 0
    target = tok._teacher_ids(blobs(2))
    assert target.shape == (2, tok.num_patches) and target.dtype == torch.long
    with pytest.raises(ValueError, match="repa_dim"):
        small(patch_size=patch, repa_weight=0.1, repa_target="ids", repa_teacher=str(tmp_path / "teacher"),
              repa_dim=teacher.vocab_size + 1).loss(blobs(2))
    with pytest.raises(ValueError, match="repa_target"):
        small(repa_target="logits")


def test_code_prior_starts_as_the_identity_learns_by_its_own_loss_and_reaches_the_decoder(tmp_path):
    plain = small().eval()
    torch.nn.init.normal_(plain.out.weight, std=0.1)
    tok = small(prior_mlp=16, prior_weight=2.0).eval()
    tok.load_state_dict(plain.state_dict(), strict=False)
    ids = plain.encode(blobs(2)).ids
    torch.testing.assert_close(tok.decode(ids), plain.decode(ids))  # zero-initialised input: the same decodes
    torch.manual_seed(0)
    loss, logs = tok.train().loss(blobs(2))
    assert float(logs["prior_loss"]) > 0
    torch.testing.assert_close(loss, logs["flow_loss"] + 2.0 * logs["prior_loss"])
    loss.backward()
    assert tok.prior[4].weight.grad.abs().sum() > 0 and tok.prior_in.weight.grad.abs().sum() > 0
    # the flow loss does not train the prior: its gradient comes from the prior loss alone
    tok.zero_grad()
    torch.nn.init.normal_(tok.prior_in.weight, std=0.1)
    tok.config.prior_weight = 0.0
    torch.manual_seed(0)
    tok.loss(blobs(2))[0].backward()
    assert tok.prior[4].weight.grad is None or tok.prior[4].weight.grad.abs().sum() == 0
    # once it is read, what the prior draws changes the decode; saved and loaded with the tokenizer
    before = tok.eval().decode(ids)
    torch.nn.init.normal_(tok.prior[4].weight, std=0.5)
    assert not torch.allclose(tok.decode(ids), before)
    tok.save_pretrained(tmp_path / "t")
    torch.testing.assert_close(load_module(tmp_path / "t").decode(ids), tok.decode(ids))
    with pytest.raises(ValueError, match="prior_mlp"):
        small(prior_mlp=-1)


def test_prior_nested_averages_the_prior_loss_over_every_power_of_two_prefix():
    tok = small(prior_mlp=16, prior_nested=True, null_prob=0.0).train()
    torch.nn.init.normal_(tok.prior[4].weight, std=0.1)
    assert tok.prefix_sizes() == [1, 2, 4, 8]
    x = blobs(3)
    torch.manual_seed(0)
    _, logs = tok.loss(x)
    grid = tok._to_grid(x)
    codes, _ = tok._encode(grid)
    target = tok._patchify(grid).float()
    slots = torch.arange(8)
    per_k = [torch.nn.functional.mse_loss(tok._code_prior(codes, (slots < k).expand(3, 8)), target) for k in (1, 2, 4, 8)]
    torch.testing.assert_close(logs["prior_loss"], torch.stack(per_k).mean())
    assert len({round(float(v.detach()), 6) for v in per_k}) == 4  # each prefix is a different readout
    # the first code gets gradient from the prior even where the drawn budget kept every token
    every = torch.ones(3, 8, dtype=torch.bool)
    tok._prior_loss(codes, tok._code_prior(codes, every), target).backward()
    assert tok.to_code.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="prior_nested"):
        small(prior_nested=True)


def test_id_embed_starts_as_the_plain_decoder_and_gives_each_kept_id_its_own_reading():
    tok = small(id_embed=True)
    plain = small()
    plain.load_state_dict({k: v for k, v in tok.state_dict().items() if not k.startswith("id_in.")})
    ids = torch.randint(0, tok.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    codes, keep = tok.fsq.ids_to_codes(ids), (torch.arange(8) < 3).expand(2, 8)
    torch.testing.assert_close(tok._registers_in(codes, keep), plain._registers_in(codes, keep))  # zero-initialised
    with torch.no_grad():
        tok.id_in.weight[ids[0, 0]] = 1.0
    changed = (tok._registers_in(codes, keep) - plain._registers_in(codes, keep)).abs().sum(-1) > 0
    assert torch.equal(changed, keep & (ids == ids[0, 0])), "only kept slots holding that id read its row"
    torch.manual_seed(0)
    for p in tok.parameters():  # as if trained: the zero-initialised output and gates would stop every gradient
        if p.dim() > 1 and p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.2)
    tok.loss(blobs(2))[0].backward()
    rows = tok.id_in.weight.grad.abs().sum(-1).nonzero().flatten()
    assert len(rows) > 0 and set(rows.tolist()) <= set(tok.encode(blobs(2)).ids.flatten().tolist()), "the encoded ids learn"
