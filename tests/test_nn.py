"""Structural masks, the attention dispatcher, RoPE, the KV cache and the chunked head cross-entropy."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmgen.nn.attention import attention, attention_backend, available_backends, current_backend
from mmgen.nn.layers import RotaryEmbedding, apply_rotary
from mmgen.nn.masks import BlockCausal, Causal, Full, all_visible, dense_mask
from mmgen.nn.transformer import Transformer, TransformerConfig


def reference_dense(mask, n):
    """Independent, loop-based reference of each mask's semantics."""
    m = torch.zeros(n, n, dtype=torch.bool)
    if isinstance(mask, Full):
        return ~m
    if isinstance(mask, Causal):
        for i in range(n):
            for j in range(n):
                m[i, j] = j <= i or j < mask.prefix
        return m
    block = [0] * mask.prefix
    for k, size in enumerate(mask.sizes):
        block += [k + 1] * size
    for i in range(n):
        for j in range(n):
            m[i, j] = block[j] <= block[i]
    return m


MASKS = [Causal(), Causal(prefix=3), BlockCausal((1, 4, 9)), BlockCausal((1, 4, 7), prefix=2), BlockCausal((3, 3, 3, 5)), Full()]


@pytest.mark.parametrize("mask", MASKS, ids=str)
def test_mask_equals_dense_reference(mask):
    n = 14
    assert torch.equal(dense_mask(mask, n, n), reference_dense(mask, n))
    # a suffix of queries (cached decoding) sees the same rows
    assert torch.equal(dense_mask(mask, 5, n, q_offset=n - 5), reference_dense(mask, n)[n - 5 :])


def test_all_visible_fast_path_is_exact():
    for mask in MASKS:
        ref = reference_dense(mask, 14)
        for off in range(14):
            for q_len in range(1, 14 - off + 1):
                kv = off + q_len
                assert all_visible(mask, q_len, kv, off) == bool(ref[off : off + q_len, :kv].all()), (mask, off, q_len)


def test_bad_masks_raise():
    with pytest.raises(ValueError, match="positive"):
        BlockCausal((1, 0))
    with pytest.raises(ValueError, match="longer"):
        dense_mask(BlockCausal((1, 2)), 5, 5)


@pytest.mark.parametrize("mask", MASKS + [None], ids=str)
def test_backends_agree(mask):
    q, k, v = torch.randn(3, 2, 4, 14, 16).unbind(0)
    with attention_backend("eager"):
        ref = attention(q, k, v, mask)
    for backend in ("sdpa", "flex"):
        with attention_backend(backend):
            out = attention(q, k, v, mask)
        assert torch.allclose(out, ref, atol=1e-5), backend
        # a fully masked-out query would give NaN; check there is none
        assert not torch.isnan(out).any()


@pytest.mark.parametrize("mask,groups", [(Causal(prefix=3), [3, 1, 1, 1, 2, 1, 1]), (BlockCausal((2, 1, 4, 3)), [2, 1, 4, 3])], ids=str)
def test_flex_backend_decodes_with_a_cache_like_the_reference(mask, groups):
    """Structured BlockMasks at every query offset (the cached decoding path), trained weights or not."""
    m = _random_transformer(False)
    n = sum(groups)
    x, pos = torch.randn(2, n, 48), torch.arange(n).float()[:, None].repeat(1, 3)
    with pytest.raises(RuntimeError, match="no backward pass on CPU"), attention_backend("flex"):
        m(x, pos, mask)
    with torch.no_grad(), attention_backend("eager"):
        full = m(x, pos, mask)
    with torch.no_grad(), attention_backend("flex"):
        cache, outs, i = m.new_cache(n), [], 0
        for g in groups:
            outs.append(m(x[:, i : i + g], pos[i : i + g], mask, cache=cache))
            i += g
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-5)


def test_backend_selection(monkeypatch):
    monkeypatch.setenv("MMGEN_ATTN_BACKEND", "eager")
    assert current_backend() == "eager"
    with attention_backend("sdpa"):
        assert current_backend() == "sdpa"
    assert current_backend() == "eager"
    monkeypatch.setenv("MMGEN_ATTN_BACKEND", "flash9")
    with pytest.raises(ValueError, match="unknown attention backend"):
        current_backend()
    assert "xformers" not in available_backends("cpu")
    with attention_backend("xformers"), pytest.raises(RuntimeError, match="CUDA"):
        attention(*torch.randn(3, 1, 1, 2, 8).unbind(0))


def test_rope_is_relative_and_1d_equivalent():
    rope = RotaryEmbedding(24, axes=3)
    q, k = torch.randn(2, 1, 1, 1, 24).unbind(0)
    def score(pq, pk):
        cq, sq = rope(torch.tensor([pq], dtype=torch.float))
        ck, sk = rope(torch.tensor([pk], dtype=torch.float))
        return (apply_rotary(q, cq, sq) * apply_rotary(k, ck, sk)).sum()
    # depends on the offset only
    assert torch.allclose(score([5, 5, 5], [2, 2, 2]), score([13, 13, 13], [10, 10, 10]), atol=1e-4)
    assert not torch.allclose(score([5, 5, 5], [2, 2, 2]), score([5, 5, 5], [3, 3, 3]), atol=1e-4)
    with pytest.raises(ValueError):
        rope(torch.zeros(3, 2))


def _random_transformer(adaln):
    cfg = TransformerConfig(dim=48, depth=2, heads=4, adaln_dim=16 if adaln else 0)
    m = Transformer(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.2)  # non-trivial weights (AdaLN gates start at zero)
    return m


@pytest.mark.parametrize("adaln", [False, True])
@pytest.mark.parametrize("mask,groups", [(Causal(prefix=3), [3, 1, 1, 1, 2, 1, 1]), (BlockCausal((2, 1, 4, 3)), [2, 1, 4, 3]), (BlockCausal((1, 4, 5), prefix=0), [1, 4, 5])])
def test_kv_cache_equals_full_forward(adaln, mask, groups):
    m = _random_transformer(adaln)
    n = sum(groups)
    x = torch.randn(2, n, 48)
    pos = torch.arange(n).float()[:, None].repeat(1, 3)
    c = torch.randn(2, 16) if adaln else None
    full = m(x, pos, mask, cond=c)
    for max_len, static in ((None, False), (n, False), (n, True)):
        cache, outs, i = m.new_cache(max_len, static), [], 0
        for g in groups:
            outs.append(m(x[:, i : i + g], pos[i : i + g], mask, cache=cache, cond=c))
            i += g
        assert torch.allclose(torch.cat(outs, 1), full, atol=1e-5)
        assert cache.length == n
        assert cache[0].k.shape[2] == (max_len if static else n)  # static: the full buffer on every step
    off_by_one = pos.clone()
    off_by_one[-groups[-1]:] += 1  # the newest group one slot late, as an off-by-one cache position would put it
    assert (m(x, off_by_one, mask, cond=c) - full).abs().max() > 100 * 1e-5  # the tolerance above would catch it


@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")  # masks are pure functions
def test_static_kv_cache_decodes_under_torch_compile_and_refuses_an_unmasked_sequence():
    m = _random_transformer(False)
    n = 6
    x, pos = torch.randn(2, n, 48), torch.arange(n).float()[:, None].repeat(1, 3)
    full = m(x, pos, Causal())
    step = torch.compile(m, backend="eager", dynamic=True)  # a traced graph, not a Python re-run of each step
    cache = m.new_cache(n + 2, static=True)
    out = torch.cat([step(x[:, i : i + 1], pos[i : i + 1], Causal(), cache=cache) for i in range(n)], 1)
    assert torch.allclose(out, full, atol=1e-5)
    with pytest.raises(ValueError, match="static KV cache needs"):
        m(x[:, :1], pos[:1], None, cache=m.new_cache(4, static=True))
    with pytest.raises(ValueError, match="needs max_len"):
        m.new_cache(static=True)


def test_kv_cache_cfg_doubled_batch():
    """Running [cond; uncond] through one cache equals running each half alone."""
    m = _random_transformer(False)
    x = torch.randn(4, 6, 48)
    pos = torch.arange(6).float()[:, None].repeat(1, 3)
    both, halves = m.new_cache(), [m.new_cache(), m.new_cache()]
    out_both = torch.cat([m(x[:, i : i + 1], pos[i : i + 1], Causal(), cache=both) for i in range(6)], 1)
    out_halves = [torch.cat([m(x[2 * h : 2 * h + 2, i : i + 1], pos[i : i + 1], Causal(), cache=halves[h]) for i in range(6)], 1) for h in range(2)]
    assert torch.allclose(out_both, torch.cat(out_halves), atol=1e-5)
    with pytest.raises(ValueError, match="batch size changed"):
        m(x[:1, :1], pos[:1], Causal(), cache=both)


def test_kv_cache_overflow_is_an_error():
    m = _random_transformer(False)
    cache = m.new_cache(max_len=2)
    pos = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="overflow"):
        m(torch.randn(1, 3, 48), pos, Causal(), cache=cache)


@pytest.mark.parametrize("max_len", [None, 16])
def test_kv_cache_truncate_forgets_the_tail(max_len):
    from mmgen.nn.kv_cache import KVCache

    cache = KVCache(2, max_len)
    k = torch.randn(1, 2, 5, 4)
    for layer in cache.layers:
        layer.append(k, k)
    cache.truncate(3)
    assert cache.length == 3
    keys, _ = cache[0].append(k[:, :, :1] + 1, k[:, :, :1] + 1)
    assert keys.shape[2] == 4 and torch.equal(keys[:, :, :3], k[:, :, :3]) and torch.equal(keys[:, :, 3], k[:, :, 0] + 1)
    with pytest.raises(ValueError):
        cache.truncate(10)


@pytest.mark.parametrize("bias,ignored", [(True, False), (False, False), (True, True)])
def test_linear_cross_entropy_matches_the_logits_path(bias, ignored):
    """Chunked head + CE (grads computed in the forward): the loss, per-token losses and every gradient of the plain path,
    ignored targets (-100) included."""
    from mmgen.nn.losses import linear_cross_entropy

    g = torch.Generator().manual_seed(0)
    h = torch.randn(300, 16, generator=g, requires_grad=True)
    head = nn.Linear(16, 50, bias=bias)
    targets = torch.randint(0, 50, (300,), generator=g)
    if ignored:
        targets[torch.rand(300, generator=g) < 0.3] = -100
    loss, per_tok = linear_cross_entropy(h, head.weight, head.bias, targets, chunk=64)  # 300 rows: a partial last chunk
    (3 * loss).backward()  # the upstream gradient scales every gradient
    mine = [h.grad, head.weight.grad] + ([head.bias.grad] if bias else [])
    h2 = h.detach().clone().requires_grad_()
    head2 = nn.Linear(16, 50, bias=bias).requires_grad_(True)
    head2.load_state_dict(head.state_dict())
    ref_tok = F.cross_entropy(head2(h2), targets, reduction="none")
    ref_loss = F.cross_entropy(head2(h2), targets)
    (3 * ref_loss).backward()
    ref = [h2.grad, head2.weight.grad] + ([head2.bias.grad] if bias else [])
    torch.testing.assert_close(per_tok, ref_tok.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss.detach(), ref_loss.detach(), rtol=1e-6, atol=1e-7)
    for a, b in zip(mine, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert not per_tok.requires_grad
    if ignored:
        assert torch.all(h.grad[targets == -100] == 0) and torch.all(per_tok[targets == -100] == 0)
    with pytest.raises(ValueError, match=r"targets \(N,\)"):
        linear_cross_entropy(h, head.weight, head.bias, targets[:10])


def test_head_cross_entropy_same_loss_under_autocast_and_chunked():
    """The generators' one loss: the chunked path and the autocast logits path give the same mean and per-token shape."""
    from mmgen.nn.losses import head_cross_entropy

    g = torch.Generator().manual_seed(1)
    h, head = torch.randn(2, 40, 16, generator=g), nn.Linear(16, 30)
    targets = torch.randint(0, 30, (2, 40), generator=g)
    targets[0, -5:] = -100
    loss, per_tok = head_cross_entropy(h, head, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_bf16, per_bf16 = head_cross_entropy(h, head, targets)
    assert per_tok.shape == per_bf16.shape == targets.shape and per_bf16.dtype == torch.float32
    torch.testing.assert_close(loss, F.cross_entropy(head(h).flatten(0, 1), targets.flatten()), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(loss_bf16, loss, rtol=0.02, atol=0.02)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_cpu_dropout_keeps_each_element_with_one_minus_p_and_the_mean(p):
    from mmgen.nn.layers import dropout

    torch.manual_seed(0)
    x = torch.ones(200_000, requires_grad=True)
    y = dropout(x, p)
    kept = y.detach() != 0
    n = x.numel()
    assert abs(kept.float().mean().item() - (1 - p)) < 4 * (p * (1 - p) / n) ** 0.5 + 2e-5
    lanes = kept[: n - n % 4].view(-1, 4).float().mean(0)  # the four 16-bit lanes of one draw are independent
    assert (lanes - (1 - p)).abs().max() < 5 * (p * (1 - p) / (n / 4)) ** 0.5
    assert torch.allclose(y.detach()[kept], torch.full_like(y.detach()[kept], 65536 / (65536 - round(p * 65536))))
    assert abs(y.mean().item() - 1.0) < 0.02
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d/dx (x * mask / keep) = mask / keep, x = 1
    torch.manual_seed(0)
    assert torch.equal(dropout(x.detach(), p), y.detach())  # the seeded default generator drives it


def test_cpu_dropout_edges_and_eval_mode():
    from mmgen.nn.layers import Dropout, dropout

    x = torch.randn(3, 5)
    assert dropout(x, 0.0) is x and dropout(x, 0.7, training=False) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dropout(x, 1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Dropout(-0.1)
    d = Dropout(0.3).eval()
    assert d(x) is x and d.state_dict() == {}


def test_attention_dropout_on_cpu_masks_the_weights_and_is_identity_at_p0():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 16, 8) for _ in range(3))
    ref = attention(q, k, v, Causal())
    assert torch.allclose(attention(q, k, v, Causal(), dropout_p=0.0), ref)
    torch.manual_seed(1)
    out = attention(q, k, v, Causal(), dropout_p=0.5)
    assert not torch.allclose(out, ref)
    first = out[:, :, 0].reshape(-1, 8)  # query 0 sees key 0 alone: its weight 1 is dropped (0) or kept and doubled
    assert all(torch.allclose(o, 2 * v0) or not o.any() for o, v0 in zip(first, v[:, :, 0].reshape(-1, 8)))
    outs = torch.stack([attention(q, k, v, Causal(), dropout_p=0.5) for _ in range(400)]).mean(0)
    assert (outs - ref).abs().max() < 0.35  # unbiased: the average over masks approaches the undropped output
