"""RAR: the annealed order schedule, causality under a random order, target-aware embeddings."""
import pytest
import torch

import mmgen
from mmgen.models.base import tokenizer_overrides
from mmgen.models.rar import permute_probability
from mmgen.tokens import Tokens


def build(**kw):
    tok = mmgen.create_tokenizer("vq-tiny").eval()
    kw = {"transformer": dict(dim=48, depth=2, heads=4), **kw}
    gen = mmgen.create_generator("rar-tiny", **tokenizer_overrides(tok), **kw)
    with torch.no_grad():
        for p in gen.parameters():
            p.normal_(0, 0.1)
    return gen.bind_tokenizer(tok)


def test_permute_probability_anneals_from_one_to_zero():
    r = [permute_probability(p / 100, 0.25, 0.75) for p in range(101)]
    assert r[0] == r[25] == 1.0 and r[75] == r[100] == 0.0
    assert r[50] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(r, r[1:]))


def test_identity_order_is_raster_and_random_order_is_causal_in_that_order():
    gen = build().eval()
    ids = torch.randint(0, gen.config.vocab_size, (2, gen.layout.num_tokens))
    cond = gen.make_condition(prompts=["a red circle at the top left", "a small blue square at the center"])
    tokens = Tokens(gen.layout, ids=ids)
    with torch.no_grad():
        raster = gen.logits(tokens, cond)
        same = gen.logits(tokens, cond, torch.arange(ids.shape[1]).expand_as(ids).clone())
        assert torch.allclose(raster, same)
        order = torch.stack([torch.randperm(ids.shape[1]) for _ in range(2)])
        before = gen.logits(tokens, cond, order)
        k = 20  # change the token generated at step k: rows 0..k (which predict steps 0..k) must not move
        changed = ids.clone()
        cells = order[:, k]
        changed[torch.arange(2), cells] = (ids[torch.arange(2), cells] + 1) % gen.config.vocab_size
        after = gen.logits(Tokens(gen.layout, ids=changed), cond, order)
    assert torch.allclose(before[:, : k + 1], after[:, : k + 1], atol=1e-5)
    assert not torch.allclose(before[:, k + 1 :], after[:, k + 1 :], atol=1e-5)


def test_target_embedding_tells_the_slot_which_cell_it_predicts():
    gen = build().eval()
    ids = torch.randint(0, gen.config.vocab_size, (1, gen.layout.num_tokens))
    cond = gen.make_condition(prompts=["a red circle"])
    order = torch.arange(ids.shape[1])[None].clone()
    swapped = order.clone()
    swapped[0, [0, 5]] = swapped[0, [5, 0]]  # step 0 predicts cell 5 instead of cell 0; no token seen yet
    with torch.no_grad():
        a = gen.logits(Tokens(gen.layout, ids=ids), cond, order)[0, 0]
        b = gen.logits(Tokens(gen.layout, ids=ids), cond, swapped)[0, 0]
    assert not torch.allclose(a, b, atol=1e-4)


def test_training_progress_sets_the_permutation_rate():
    gen = build().train()
    tokens, cond = gen.prepare_batch({"pixels": torch.rand(4, 3, 32, 32) * 2 - 1, "caption": ["a red circle"] * 4})
    _, early = gen(tokens, cond, progress=0.0)
    _, late = gen(tokens, cond, progress=1.0)
    assert early["rar/permute_prob"].item() == 1.0 and late["rar/permute_prob"].item() == 0.0


def test_bad_rar_config_is_an_error():
    with pytest.raises(ValueError, match="target_pos_embed"):
        build(target_pos_embed=False)
    with pytest.raises(ValueError, match="anneal"):
        build(anneal_start=0.8, anneal_end=0.5)


def test_adaln_backbone_as_in_the_reference_presets_caches_exactly():
    from mmgen.sampler import SamplerConfig

    gen = build(transformer=dict(dim=48, depth=2, heads=4, adaln_dim=48)).eval()
    cond = gen.make_condition(prompts=["a red circle at the top left", "a green square"])
    cached = gen.generate(cond, SamplerConfig(seed=3, cfg_scale=2.0, use_cache=True)).ids
    full = gen.generate(cond, SamplerConfig(seed=3, cfg_scale=2.0, use_cache=False)).ids
    assert torch.equal(cached, full)
    gen.train()
    tokens, c = gen.prepare_batch({"pixels": torch.rand(2, 3, 32, 32) * 2 - 1, "caption": ["a red circle", "a blue square"]})
    gen(tokens, c, progress=0.1)[0].backward()
    assert all(p.grad is not None for p in gen.transformer.parameters())


def test_a_tiny_model_overfits_one_permuted_batch():
    torch.manual_seed(0)
    gen = build().train()
    with torch.no_grad():  # back to a trainable init (build() randomizes for the equivalence tests)
        gen.head.weight.zero_()
    ids = torch.randint(0, gen.config.vocab_size, (2, gen.layout.num_tokens))
    tokens = Tokens(gen.layout, ids=ids)
    cond = gen.make_condition(prompts=["a red circle at the top left", "a small blue square at the center"])
    order = torch.stack([torch.randperm(ids.shape[1]) for _ in range(2)])
    opt = torch.optim.Adam(gen.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        logits = gen.logits(tokens, cond, order)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids.gather(1, order).flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 5.0 and losses[-1] < 0.1, (losses[0], losses[-1])


def test_context_noise_corrupts_training_inputs_only():
    """Raster with ``context_noise``: training replaces a per-sample fraction of the input tokens; eval never does."""
    tok = mmgen.create_tokenizer("vq-tiny").eval()
    gen = mmgen.create_generator("raster-tiny", **tokenizer_overrides(tok), transformer=dict(dim=48, depth=2, heads=4), context_noise=0.9)
    torch.manual_seed(0)
    ids = torch.randint(0, gen.config.vocab_size, (64, gen.layout.num_tokens))
    gen.train()
    noisy = gen._noisy_context(ids)
    changed = (noisy != ids).float().mean(1)
    assert 0.0 < changed.mean() < 0.9 and changed.min() < changed.max()  # per-sample fractions in [0, 0.9)
    gen.eval()
    assert torch.equal(gen._noisy_context(ids), ids)
    with pytest.raises(ValueError, match="context_noise"):
        mmgen.create_generator("raster-tiny", **tokenizer_overrides(tok), context_noise=1.0)
