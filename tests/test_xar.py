"""xAR: entity schedules, noisy context learning, flow head and solvers, sampling with the KV cache."""
from dataclasses import replace

import pytest
import torch

import mmgen
from mmgen.models.base import Condition, tokenizer_overrides
from mmgen.models.entities import parse_entities
from mmgen.nn.flow import FlowHead, solve_flow
from mmgen.nn.masks import BlockCausal, dense_mask
from mmgen.sampler import SamplerConfig
from mmgen.tokens import GridLayout, Tokens

# Small and with 2x2-cell entities (16 of 4 tokens), so the tests see multi-token entities; the presets'
# single-token entities are one of the parametrized schedules below.
SMALL = dict(transformer=dict(dim=48, depth=2, heads=4), head_depth=1, entities="cell:2")
GRID = GridLayout(8, 8)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def build(name="xar-tiny-class", **kw):
    tok = mmgen.create_tokenizer("kl-tiny").eval()
    gen = mmgen.create_generator(name, **tokenizer_overrides(tok), **{**SMALL, **kw})
    return gen.bind_tokenizer(tok).eval()


def randomize(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.1)


def latents(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Tokens(GRID, latents=torch.randn(n, 64, 4, generator=g))


def labels(n=3):
    return Condition(n, labels=torch.arange(n) % 10)


# ----- entity schedules
@pytest.mark.parametrize("spec,sizes", [
    ("token", (1,) * 64), ("cell:2", (4,) * 16), ("cell:4", (16,) * 4), ("subsample:2", (16,) * 4),
    ("subsample:4", (4,) * 16), ("scale:1,2,4,8", (1, 4, 16, 64)), ("image", (64,)),
])
def test_schedules_give_blockcausal_group_sizes(spec, sizes):
    gen = build(entities=spec)
    P = gen.prefix_len
    assert gen.schedule.sizes == sizes and gen.num_entities == len(sizes)
    assert gen.schedule.mask(P) == BlockCausal(sizes, prefix=P)
    assert gen.positions.shape == (P + sum(sizes), 3)


def test_cell_vs_token_masks():
    cell, token = parse_entities("cell:2", GRID), parse_entities("token", GRID)
    m = dense_mask(cell.mask(1), 65, 65)
    assert m[1:5, 1:5].all() and not m[1:5, 5:9].any()  # a cell sees itself bidirectionally, not the next cell
    assert m[5:9, 1:5].all()  # and the next cell sees it
    t = dense_mask(token.mask(1), 65, 65)
    assert torch.equal(t, torch.tril(torch.ones(65, 65, dtype=torch.bool)) | (torch.arange(65) == 0))  # plain causal after the prefix
    # a 2x2 cell is 4 neighbouring tokens; a subsample entity is strided
    assert cell.order()[:4].tolist() == [0, 1, 8, 9]
    assert parse_entities("subsample:2", GRID).order()[:4].tolist() == [0, 2, 4, 6]


@pytest.mark.parametrize("spec", ["token", "cell:2", "subsample:2", "scale:1,2,4,8", "image"])
def test_split_merge_round_trip(spec):
    s = parse_entities(spec, GRID)
    x = latents().latents
    seq = s.split(x)
    assert seq.shape == (3, s.num_slots, 4)
    assert torch.equal(s.merge(seq), x)
    part = s.merge(seq, 1)  # partial result: first entity only (zeros elsewhere; a scale upsampled)
    assert part.shape == x.shape


@pytest.mark.parametrize("spec,match", [
    ("cell:3", "divide"), ("subsample:0", "divide"), ("scale:1,2,4", "last scale"), ("scale:1,4,2,8", "increasing"),
    ("blob:2", "unknown kind"), ("cell", "needs an argument"), ("token:2", "no argument"), ("cell:a", "integers"),
])
def test_bad_entities_are_clear_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        build(entities=spec)


def test_needs_continuous_tokens():
    gen = build()
    with pytest.raises(ValueError, match="vocab_size=0"):
        mmgen.create_generator("xar-tiny-class", vocab_size=512)
    with pytest.raises(ValueError, match="does not match"):
        gen.bind_tokenizer(mmgen.create_tokenizer("vq-tiny"))
    with pytest.raises(ValueError, match="continuous latents"):
        gen(Tokens(GRID, ids=torch.zeros(2, 64, dtype=torch.long)), labels(2))
    with pytest.raises(ValueError, match="flow_solver"):
        SamplerConfig(flow_solver="rk4")


# ----- noisy context learning
def test_noisy_context_every_entity_has_its_own_noise_level():
    gen = build()
    tokens = latents()
    x_t, t, v, w = gen.noisy_sequence(tokens, torch.Generator().manual_seed(0))
    per_entity = t.reshape(3, gen.num_entities, 4)
    assert (per_entity == per_entity[..., :1]).all()  # one t per entity ...
    assert per_entity[..., 0].unique().numel() == 3 * gen.num_entities  # ... independent across entities
    assert (t > 0).all() and (t < 1).all() and (w == 1).all()
    x = gen.schedule.split(tokens.latents)
    torch.testing.assert_close(x_t, x + t[..., None] * v)  # x_t = (1 - t) x + t eps, v = eps - x


def test_teacher_forcing_switch_gives_clean_context_and_one_target():
    gen = build(noisy_context=False)
    tokens = latents(8)
    x_t, t, v, w = gen.noisy_sequence(tokens, torch.Generator().manual_seed(1))
    x = gen.schedule.split(tokens.latents)
    ent = gen.slot_entity
    for i in range(8):
        target = int(ent[w[i] > 0][0])
        assert torch.equal(w[i] > 0, ent == target)  # loss on one entity only
        before = ent < target
        assert (t[i, before] == 0).all() and torch.equal(x_t[i, before], x[i, before])  # clean context
        assert (t[i, ent == target] > 0).all()


def test_single_target_control_keeps_the_context_noisy():
    gen = build(single_target=True)
    x_t, t, v, w = gen.noisy_sequence(latents(8), torch.Generator().manual_seed(1))
    ent = gen.slot_entity
    for i in range(8):
        target = int(ent[w[i] > 0][0])
        assert torch.equal(w[i] > 0, ent == target)  # the teacher-forcing ablation's supervision ...
        assert (t[i] > 0).all()  # ... with every entity noisy


# ----- flow head and solvers
def test_flow_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    gen = build(entities="cell:4").train()
    gen.config.cond_dropout = 0.0
    g = torch.Generator().manual_seed(0)  # a smooth latent per sample (learnable, unlike white noise)
    tokens = Tokens(GRID, latents=torch.randn(8, 1, 4, generator=g) + 0.3 * torch.linspace(-1, 1, 64)[None, :, None])
    cond = labels(8)

    def fixed_loss():
        with torch.no_grad():
            pred, v, _ = gen.velocity(tokens, cond, rng=torch.Generator().manual_seed(123))
            return float((pred - v).square().mean())

    before = fixed_loss()
    opt = torch.optim.AdamW(gen.parameters(), lr=3e-3)
    for _ in range(80):
        loss, _ = gen(tokens, cond)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fixed_loss()
    assert after < 0.3 * before, (before, after)


def gaussian_velocity(mu, sigma):
    """Exact velocity of the linear path from data N(mu, sigma^2) to N(0, 1) (sigma = 0: a point)."""
    def v(x, t):
        t = t[:, None]
        s2 = (1 - t) ** 2 * sigma**2 + t**2
        return -mu + (t - (1 - t) * sigma**2) / s2 * (x - (1 - t) * mu)
    return v


@pytest.mark.parametrize("steps", [1, 4, 50])
def test_euler_recovers_a_straight_line_flow_exactly(steps):
    x0 = torch.randn(16, 5, dtype=torch.float64).float()
    noise = torch.randn(16, 5)
    # every path of a point mass is a straight line: Euler is exact at any step count
    for i in range(16):
        out = solve_flow(gaussian_velocity(x0[i], 0.0), noise[i : i + 1], steps, "euler")
        torch.testing.assert_close(out[0], x0[i], atol=1e-5, rtol=0)
    const = solve_flow(lambda x, t: noise - x0, noise, steps, "euler")  # constant velocity eps - x
    torch.testing.assert_close(const, x0, atol=1e-5, rtol=0)


def test_ode_and_sde_sample_a_gaussian():
    mu, sigma = 1.5, 0.5
    noise = torch.randn(20000, 1, generator=torch.Generator().manual_seed(0))
    ode = solve_flow(gaussian_velocity(torch.tensor(mu), sigma), noise, 2000, "euler")
    torch.testing.assert_close(ode, mu + sigma * noise, atol=2e-3, rtol=0)  # the ODE's deterministic map
    sde = solve_flow(gaussian_velocity(torch.tensor(mu), sigma), noise, 200, "euler-maruyama", rng=torch.Generator().manual_seed(1))
    assert abs(float(sde.mean()) - mu) < 0.03 and abs(float(sde.std()) - sigma) < 0.03


def test_flow_head_depths():
    z, te = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    assert FlowHead(16, 4, depth=0)(z, te).shape == (2, 5, 4)
    assert FlowHead(16, 4, depth=2, width=32)(z, te).shape == (2, 5, 4)
    with pytest.raises(ValueError, match="head_depth"):
        FlowHead(16, 4, depth=-1)


# ----- sampling
@pytest.mark.parametrize("solver", ["euler", "euler-maruyama"])
def test_sampling_is_deterministic_for_a_seed(solver):
    gen = build()
    randomize(gen)
    s = dict(flow_steps=4, flow_solver=solver, cfg_scale=2.0, cfg_schedule="linear")
    a = gen.generate(labels(2), SamplerConfig(**s, seed=3)).latents
    b = gen.generate(labels(2), SamplerConfig(**s, seed=3)).latents
    c = gen.generate(labels(2), SamplerConfig(**s, seed=4)).latents
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.isfinite(a).all() and a.shape == (2, 64, 4)


@pytest.mark.parametrize("spec", ["token", "cell:2", "subsample:2", "scale:1,2,4,8", "image"])
def test_kv_cached_generation_equals_uncached(spec):
    gen = build("xar-tiny", entities=spec)
    randomize(gen)
    cond = gen.make_condition(prompts=["a large red circle at the top left", "a small blue square at the center"])
    s = dict(flow_steps=3, cfg_scale=2.0, cfg_schedule="linear", seed=5, flow_solver="euler-maruyama")
    a = gen.generate(cond, SamplerConfig(**s)).latents
    b = gen.generate(cond, SamplerConfig(**s, use_cache=False)).latents
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_cfg_schedule_is_linear_over_entities():
    gen = build()
    randomize(gen)
    plain = gen.generate(labels(2), SamplerConfig(flow_steps=3, seed=1)).latents
    guided = gen.generate(labels(2), SamplerConfig(flow_steps=3, seed=1, cfg_scale=4.0, cfg_schedule="linear")).latents
    first = gen.schedule.order()[:4]  # the first entity gets guidance scale 1: the conditional velocity
    torch.testing.assert_close(guided[:, first], plain[:, first], atol=1e-5, rtol=0)
    assert not torch.allclose(guided, plain, atol=1e-3)


def test_streaming_callback_shows_entities_as_they_come():
    gen = build()
    randomize(gen)
    seen = []
    out = gen.generate(labels(1), SamplerConfig(flow_steps=2), callback=lambda k, n, part: seen.append((k, n, part.latents.clone())))
    assert [k for k, _, _ in seen] == list(range(1, gen.num_entities + 1)) and seen[0][1] == gen.num_entities
    filled = [int((p.abs().sum(-1) > 0).sum()) for _, _, p in seen]
    assert filled == [4 * k for k in range(1, gen.num_entities + 1)]
    assert torch.equal(seen[-1][2], out.latents)
    assert gen.transformer_passes(SamplerConfig(flow_steps=2)) == 1 + 16 * 2 + 15


# ----- noise level through AdaLN (the reference's) and the context's noise level at sampling
def test_adaln_time_cond_reaches_every_block_not_the_input():
    gen = build(time_cond="adaln")
    randomize(gen)
    tokens, cond = latents(2), labels(2)
    x = gen.schedule.split(tokens.latents)[:, :4]
    t0, t1 = gen.time_embed(torch.zeros(2, 4)), gen.time_embed(torch.full((2, 4), 0.7))
    assert torch.equal(gen._embed(x, t0, 0), gen._embed(x, t1, 0))  # no noise level on the input ...
    a = gen.velocity(tokens, cond, rng=torch.Generator().manual_seed(0))[0]
    b = gen.velocity(tokens, cond, rng=torch.Generator().manual_seed(0), cached=True)[0]
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)  # ... per-slot AdaLN, same with the cache
    with pytest.raises(ValueError, match="time_cond"):
        build(time_cond="bias")


@pytest.mark.parametrize("kw,context_t", [(dict(time_cond="adaln"), 0.0), (dict(time_cond="adaln"), 0.2), ({}, 0.2)])
def test_adaln_and_context_noise_sampling_cached_equals_uncached(kw, context_t):
    gen = build("xar-tiny", **kw)
    randomize(gen)
    cond = gen.make_condition(prompts=["a large red circle at the top left", "a small blue square at the center"])
    s = dict(flow_steps=3, cfg_scale=2.0, cfg_schedule="linear", flow_context_t=context_t, seed=5)
    a = gen.generate(cond, SamplerConfig(**s)).latents
    b = gen.generate(cond, SamplerConfig(**s, use_cache=False)).latents
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    assert torch.isfinite(a).all()


def test_context_noise_level_changes_later_entities_only():
    gen = build()
    randomize(gen)
    s = SamplerConfig(flow_steps=3, seed=2)
    clean = gen.generate(labels(2), s).latents
    noisy = gen.generate(labels(2), replace(s, flow_context_t=0.3)).latents
    first = gen.schedule.order()[:4]
    torch.testing.assert_close(noisy[:, first], clean[:, first], atol=1e-6, rtol=0)  # the first entity has no context
    assert not torch.allclose(noisy, clean, atol=1e-3)
    with pytest.raises(ValueError, match="flow_context_t"):
        SamplerConfig(flow_context_t=1.0)

