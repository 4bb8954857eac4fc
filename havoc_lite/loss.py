"""Next-token cross-entropy that never holds the full logits.

`lm_loss` takes logits [B, T, V] that already exist (evaluation, callers with their own head).
`linear_cross_entropy` fuses the LM head into the loss: it walks the tokens in chunks, and for each
chunk computes the fp32 logits, the loss and, at once, the gradients of the hidden states and of
the head weight (softmax − one-hot, the closed form of d CE / d logits). Only one chunk of logits
[chunk, V] lives at a time, so training at 64 × 1024 × 32k no longer spends 8 GiB on logits and
their gradient, and no matmul is recomputed (unlike wrapping each chunk in activation
checkpointing). This is the method of Liger Kernel's FusedLinearCrossEntropy (Hsu et al. 2024)
and of Wijmans et al. 2024, "Cut Your Losses in Large-Vocabulary Language Models", done here in
plain PyTorch ops.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
CHUNK_TOKENS = 256    # tokens per logits chunk: [256, V] fp32 is 32 MiB at V = 32k


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits [B, T, V] against aligned targets [B, T]; -100 is ignored.

    A batch whose targets are all ignored gives 0, not NaN (sum / max(count, 1), no host sync).
    """
    flat = targets.reshape(-1)
    total = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), flat,
                            ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (flat != IGNORE_INDEX).sum().clamp(min=1)


class _LinearCrossEntropy(torch.autograd.Function):
    """loss = mean CE(h @ W.T, y) over y != -100, gradients computed chunk by chunk in forward.
    With `rows` [k, d] and `index` [k]: W is `weight` with rows `index` replaced. The products run
    in `dtype` (autocast's, or the weight's); the weight's and rows' gradients are summed in fp32
    and returned in their own dtype, so an fp32 master weight under bf16 autocast gets an fp32
    gradient without a round trip through bf16."""

    @staticmethod
    def forward(ctx, h, weight, rows, index, targets, chunk, dtype):
        n = (targets != IGNORE_INDEX).sum().clamp(min=1)
        want_h, want_w, want_r = ctx.needs_input_grad[:3]
        w = weight.to(dtype)                                 # no copy when already in dtype
        r = rows.to(dtype) if rows is not None else None
        # 1/n goes into each chunk's gradient (no [V, d] division after), except in fp16: it cannot
        # hold per-token gradients of size ~1/n before the GradScaler's scale reaches them (they
        # would underflow to 0), so there the sums are divided at the end and the hidden-state
        # gradient is kept in fp32
        fold = dtype != torch.float16
        gh_dtype = torch.float32 if h.dtype == torch.float16 else h.dtype
        grad_h = torch.empty(h.shape, dtype=gh_dtype, device=h.device) if want_h else None
        grad_w = grad_r = None     # fp32 sums, started by the first chunk (no zero fill)
        # the replaced rows' share of d loss / d h: g[:, index] @ (rows - weight[index]), [k, d]
        fix = r - w.index_select(0, index) if r is not None and want_h else None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        # equal chunks (523 tokens: 3 x 175, not 256 + 256 + 11): a short last chunk still pays a
        # whole [V, d] product and copy for the head's gradient
        pieces = max(1, -(-h.size(0) // chunk))            # ceil(N / chunk), at least one
        chunk = max(1, -(-h.size(0) // pieces))             # ceil(N / pieces)
        for s in range(0, h.size(0), chunk):
            hc, yc = h[s:s + chunk], targets[s:s + chunk]
            # one log-softmax serves both the loss and (exponentiated in place) the gradient
            z = F.linear(hc, w)                                          # [c, V]
            if r is not None:
                z.index_copy_(1, index, F.linear(hc, r))
            logp = F.log_softmax(z.float(), dim=-1)                       # [c, V] fp32
            valid = (yc != IGNORE_INDEX).float()[:, None]
            picked = yc.clamp(min=0)[:, None]                            # no boolean indexing: no host sync
            total -= (logp.gather(1, picked) * valid).sum()
            if not (want_h or want_w or want_r):
                continue
            # d(mean CE)/d logits = (softmax − one_hot) / n on counted rows, 0 on ignored ones
            g = logp.exp_()
            g.scatter_add_(1, picked, -valid)
            g = g.mul_(valid / n if fold else valid).to(dtype)
            # Accumulate in place (addmm_ in fp32): a fresh [V, d] temporary per chunk cost 50m a
            # sixth of its CPU step, most of it page faults on 64 MB buffers that malloc hands
            # back to the OS each time (scripts/profile_train.py).
            if want_h:
                if grad_h.dtype == dtype:
                    torch.mm(g, w, out=grad_h[s:s + chunk])
                    if fix is not None:
                        grad_h[s:s + chunk].addmm_(g.index_select(1, index), fix)
                else:
                    gc = g @ w
                    if fix is not None:
                        gc += g.index_select(1, index) @ fix
                    grad_h[s:s + chunk] = gc.to(gh_dtype)
            if want_w:
                if grad_w is None:
                    grad_w = (g.t() @ hc).float()             # no copy in fp32
                elif dtype == torch.float32:
                    grad_w.addmm_(g.t(), hc)
                else:
                    grad_w += g.t() @ hc                      # bf16 product, summed into fp32
            if want_r:
                part = g.index_select(1, index).t() @ hc
                grad_r = part.float() if grad_r is None else grad_r.add_(part)
        if want_w and rows is not None:
            grad_w.index_fill_(0, index, 0.0)       # those rows of weight are not in the head
        if not fold:
            for grad in (grad_h, grad_w, grad_r):
                if grad is not None:
                    grad.div_(n)
        ctx.save_for_backward(grad_h, grad_w, grad_r)
        ctx.dtypes = (h.dtype, weight.dtype, rows.dtype if rows is not None else None)
        return total / n

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_r = ctx.saved_tensors
        h_dtype, w_dtype, r_dtype = ctx.dtypes
        gh = (grad_h * grad_out).to(h_dtype) if grad_h is not None else None
        gw = (grad_w * grad_out).to(w_dtype) if grad_w is not None else None
        gr = (grad_r * grad_out).to(r_dtype) if grad_r is not None else None
        return gh, gw, gr, None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk: int = CHUNK_TOKENS, rows: Optional[torch.Tensor] = None,
                         index: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean next-token cross-entropy of `hidden @ weight.T` against aligned `targets`, -100 ignored,
    without materialising the logits [B, T, V] (see the module docstring). Only the rows with a
    counted target enter the head (one host sync for the index; under torch.compile all rows do,
    masked), so SFT pays for its answer tokens, not its prompts.

    Args:
        hidden: [B, T, d] or [N, d], the final-norm output (any float dtype).
        weight: [V, d], the LM head (tied or not).
        targets: LongTensor [B, T] / [N]; targets[t] is the token after hidden[t].
        chunk: tokens per logits chunk; peak extra memory is about chunk × V × 4 bytes × 3.
        rows, index: optional [k, d] rows that replace `weight`'s rows `index` (LongTensor [k]),
            as the markup rows a pretrained vocabulary gained are trained over a frozen head
            (`lora.token_rows`). The head is then that merged matrix, without building it: `rows`
            get their gradient, `weight`'s rows at `index` none, and no [V, d] copy is made.

    Returns:
        a scalar fp32 loss, equal to `lm_loss(F.linear(hidden, weight), targets)` up to fp32
        rounding (tested against it), with the same gradients. All targets ignored gives 0.
    """
    if chunk < 1:
        raise ValueError(f"linear_cross_entropy: chunk must be >= 1, got {chunk}")
    h, y = hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1)
    if not torch.compiler.is_compiling():
        # Only counted tokens enter the head: in SFT most targets are -100 (prompt, tool results,
        # padding), and the head's three [chunk, V] products were most of a LoRA step on a CPU
        # (SmolLM2-135M, V 49k: 1.1 of 3.5 s with a third of the tokens counted). The index costs
        # one host sync; under torch.compile the data-dependent size would recompile, so the
        # compiled graph keeps the masked full pass.
        keep = (y != IGNORE_INDEX).nonzero().squeeze(1)
        if keep.numel() < y.numel():
            h, y = h.index_select(0, keep), y.index_select(0, keep)
    if (rows is None) != (index is None):
        raise ValueError("linear_cross_entropy: rows and index go together")
    if torch.is_autocast_enabled(h.device.type):
        # the head runs in the autocast dtype, as nn.Linear would under autocast; the weight is
        # cast inside, so its gradient comes back in its own dtype (fp32) without a bf16 detour
        dt = torch.get_autocast_dtype(h.device.type)
        with torch.autocast(h.device.type, enabled=False):
            return _LinearCrossEntropy.apply(h.to(dt), weight, rows, index, y, chunk, dt)
    return _LinearCrossEntropy.apply(h, weight, rows, index, y, chunk, weight.dtype)
