"""Cross-entropy of a linear head without materialising the ``(N, V)`` logits (training).

A generator's head over a large vocabulary (VAR: 4096 codes for each of 680 positions) makes the
logits, their log-softmax and both of their gradients the largest tensors of a training step;
writing and re-reading them costs more than the head's matmuls on a CPU. ``linear_cross_entropy``
walks the rows in chunks that stay in cache: per chunk it computes the logits, the per-token loss
and, when a gradient is needed, the gradients of the hidden states, the weight and the bias, all in
the forward pass (the mean loss's gradient does not depend on anything computed later). The
backward pass only scales them. Same three matmuls as ``F.cross_entropy(head(h), t)``, far less
memory traffic; the result agrees to float rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["head_cross_entropy", "linear_cross_entropy"]

CHUNK_ROWS = 128  # rows of logits alive at a time: 128 x 4096 floats = 2 MB (in L2; 64-2048 measured, 128 fastest on one thread)
MULTI_THREAD_CHUNKS = 16  # with several CPU threads: at most this many chunks (a thread stalled by another process stalls every op)
IGNORE_INDEX = -100  # F.cross_entropy's default: targets equal to it have no loss and no gradient


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, chunk: int):
        need = ctx.needs_input_grad
        valid = targets != IGNORE_INDEX
        masked = not bool(valid.all())
        targets = targets.clamp_min(0) if masked else targets
        count = max(int(valid.sum()), 1)
        per_tok = h.new_empty(h.shape[0], dtype=torch.float32)
        grad_h = torch.empty_like(h) if need[0] else None
        grad_w = torch.zeros_like(weight) if need[1] else None
        grad_b = torch.zeros_like(bias) if bias is not None and need[2] else None
        for a in range(0, h.shape[0], chunk):
            hc, tc = h[a : a + chunk], targets[a : a + chunk, None]
            logp = F.linear(hc, weight, bias).float().log_softmax(-1)
            per_tok[a : a + chunk] = -logp.gather(-1, tc)[:, 0]
            if any(need[:3]):
                p = logp.exp_()  # softmax, in place
                p.scatter_add_(-1, tc, p.new_full(tc.shape, -1.0))  # d(loss_i)/d(logits_i) = softmax - onehot
                if masked:
                    p.mul_(valid[a : a + chunk, None])
                if grad_h is not None:
                    torch.mm(p, weight, out=grad_h[a : a + chunk])
                if grad_w is not None:
                    grad_w.addmm_(p.t(), hc)
                if grad_b is not None:
                    grad_b.add_(p.sum(0))
        if masked:
            per_tok.mul_(valid)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.count = count
        ctx.mark_non_differentiable(per_tok)
        return per_tok.sum() / count, per_tok

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_per_tok):
        scale = grad_loss / ctx.count
        return (*(None if g is None else g * scale for g in ctx.saved_tensors), None, None)


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                         chunk: int = CHUNK_ROWS) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean loss, per-token losses)`` of ``F.cross_entropy(F.linear(h, weight, bias), targets)``.

    ``h (N, D)``, ``targets (N,)``; targets equal to -100 are ignored (loss 0, no gradient, not in the
    mean), as in ``F.cross_entropy``. Only the mean is differentiable; the per-token losses (float32,
    detached) are for logging. Under autocast, or for a gradient of anything but the mean, use
    ``F.cross_entropy`` on the logits (``head_cross_entropy`` picks).
    """
    if h.dim() != 2 or targets.shape != h.shape[:1]:
        raise ValueError(f"expected h (N, D) and targets (N,), got {tuple(h.shape)} and {tuple(targets.shape)}")
    if h.device.type == "cpu" and torch.get_num_threads() > 1:  # every op is a barrier of all threads: few, large chunks
        chunk = max(chunk, -(-h.shape[0] // MULTI_THREAD_CHUNKS))
    loss, per_tok = _LinearCrossEntropy.apply(h, weight, bias, targets, chunk)
    return loss, per_tok.detach()


def head_cross_entropy(h: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean loss, detached per-token losses shaped like targets)`` of a generator's linear ``head`` on hidden states ``h (..., D)``.

    The training loss of every discrete-token generator: chunked (``linear_cross_entropy``) where it
    can be, the logits path under autocast (the chunked path computes in the weights' dtype).
    Targets equal to -100 are ignored.
    """
    flat_h, flat_t = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
    if torch.is_autocast_enabled(h.device.type):
        per_tok = F.cross_entropy(head(flat_h).float(), flat_t, reduction="none", ignore_index=IGNORE_INDEX)
        loss = per_tok.sum() / (flat_t != IGNORE_INDEX).sum().clamp_min(1)
        return loss, per_tok.detach().view_as(targets)
    loss, per_tok = linear_cross_entropy(flat_h, head.weight, head.bias, flat_t)
    return loss, per_tok.view_as(targets)
