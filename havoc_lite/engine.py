"""Generation: a preallocated KV cache, sampling, streaming, and tool calls inside the decode loop.

One loop serves prefill, decode and injection. Each row keeps its token list `seq` and `fed`, the
number of its tokens whose keys/values are already in the cache. Every step feeds each active row
its unfed tokens `seq[fed:]` in ONE forward pass (right-padded to the longest), samples one token
per row from the logits of the row's last real token, and appends it. Usually that is one token
per row (plain decode); at the start it is the whole prompt (prefill); after a tool call it is the
`</tool>` the model just wrote plus `<tool_result>…</tool_result>` the engine wrote (injection
prefill). So an injection never costs an extra forward pass, and rows that inject and rows that just
decode share the same one.

Padding: the padded slots of a row are written at cache slots past the row's real tokens, where no
real query of that forward can see them (each query attends to slots <= its position) and where the
row's later real tokens overwrite them before anyone attends there. The cache is as long as the
longest row may grow (`max_len`), and the last slot is never a real position in a forward (the last
token of a full row is sampled, never fed), so padding positions are clamped to `max_len - 1` and
never collide with real ones or leave the cache.

Finished rows are dropped from the batch (the cache rows are compacted), so a long answer in a batch
of short ones does not pay for the short ones.

`generate(compile=True)` sends the one-token decode steps through `torch.compile` with fixed shapes
(every cache slot, masked by position); prefill and injection stay eager. It pays where per-token
overhead dominates (small models, small batches): see the README's speed section.
"""
from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from .config import ModelConfig
from .markup import BOS, TOOL, TOOL_RESULT, close_tag, open_tag

StreamFn = Callable[[int, list], None]
InterceptFn = Callable[[int, list], Optional[tuple]]


class KVCache:
    """Preallocated key/value cache for `HavocModel.forward(..., kv_cache=...)`.

    `k`, `v`: lists of n_layers tensors [batch_size, num_kv_heads, max_len, head_dim] (zeros),
    written in place by the model at each row's positions. One tensor per layer, not one
    [n_layers, ...] tensor, because a compiled decode step (`generate(compile=True)`) writes to its
    inputs in place only when they are whole tensors; a slice of a larger one makes torch.compile
    copy the whole cache each step. Memory: 2 · n_layers · B · KV · max_len · hd · bytes(dtype).

    Raises:
        ValueError: batch_size or max_len not positive, or max_len > cfg.max_seq_len.
    """

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        if batch_size <= 0 or max_len <= 0:
            raise ValueError(f"KVCache: batch_size={batch_size} and max_len={max_len} must be > 0")
        if max_len > cfg.max_seq_len:
            raise ValueError(f"KVCache: max_len={max_len} exceeds max_seq_len={cfg.max_seq_len}")
        shape = (batch_size, cfg.num_kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        # Host-side facts about the next forward, set by the engine so the model need not read
        # `positions` back from the GPU: slots in use after it (max position + 1), and whether
        # every row sits at the same position. None: the model computes them (one sync).
        self.filled: Optional[int] = None
        self.same_position: bool = False

    @property
    def batch_size(self) -> int:
        return self.k[0].shape[0]

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows `rows` (LongTensor of indices), in that order."""
        self.k = [t.index_select(0, rows) for t in self.k]
        self.v = [t.index_select(0, rows) for t in self.v]


@dataclass
class Generation:
    """One row's output.

    tokens: the new ids after the prompt (sampled and engine-written, in order; a stop token that
        ended the row is included).
    engine_mask: same length as `tokens`; 1 where the engine wrote the token (tool results,
        interceptor tokens marked engine-written), 0 where the model sampled it. Training data made
        from a generation should put no loss on the 1s.
    tool_calls: one dict per executed call: `name`, `args` (None when the call did not parse),
        `result` (a `ToolResult`), `text` (the decoded call body), `step` (index in `tokens` of the
        `</tool>` that closed the call).
    finish_reason: "stop" (a stop id was sampled), "length" (max_new_tokens or max_seq_len
        reached), or "tool_limit" (the model closed a call past `max_tool_calls`).
    num_tokens: len(tokens).
    elapsed_s: wall-clock seconds of the whole `generate` call (shared by the batch).
    """

    tokens: list = field(default_factory=list)
    engine_mask: list = field(default_factory=list)
    tool_calls: list = field(default_factory=list)
    finish_reason: str = "length"
    num_tokens: int = 0
    elapsed_s: float = 0.0


# --- sampling -------------------------------------------------------------------------------------
def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: Optional[int] = None,
                top_p: Optional[float] = None,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Pick one token per row from logits [B, V]; returns LongTensor [B].

    temperature <= 0 is greedy (argmax; top_k/top_p are then irrelevant). Otherwise the logits are
    divided by the temperature, cut to the `top_k` largest (Fan et al. 2018), then to the smallest
    set whose probability reaches `top_p` (nucleus sampling, Holtzman et al. 2019; the most likely
    token is always kept), and sampled with `generator`. Same order as Hugging Face's warpers.

    Raises:
        ValueError: top_k < 1 or top_p outside (0, 1].
    """
    if temperature is None or temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if top_k < logits.size(-1):
            kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            probs = torch.softmax(sorted_logits, dim=-1)
            mass_before = probs.cumsum(dim=-1) - probs
            drop_sorted = mass_before >= top_p
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            logits = logits.masked_fill(drop, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters(), None)
    if p is None:
        return torch.device("cpu"), torch.float32
    return p.device, p.dtype


def _make_generator(seed: Optional[int], device: torch.device) -> Optional[torch.Generator]:
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def _check_prompts(prompts: Sequence[Sequence[int]], cfg: ModelConfig) -> list[list[int]]:
    if isinstance(prompts, torch.Tensor):
        prompts = prompts.tolist()
    if len(prompts) == 0:
        raise ValueError("generate: no prompts given")
    out = []
    for i, p in enumerate(prompts):
        p = p.tolist() if isinstance(p, torch.Tensor) else list(p)
        if not p:
            raise ValueError(f"generate: prompt {i} is empty (start it with {BOS})")
        bad = [t for t in p if not 0 <= t < cfg.vocab_size]
        if bad:
            raise ValueError(f"generate: prompt {i} has token id {bad[0]} outside the vocabulary "
                             f"[0, {cfg.vocab_size})")
        if len(p) >= cfg.max_seq_len:
            raise ValueError(f"generate: prompt {i} has {len(p)} tokens, which leaves no room "
                             f"within max_seq_len={cfg.max_seq_len}")
        out.append(p)
    return out


# --- the tool hook --------------------------------------------------------------------------------
class _ToolHook:
    """Turns a closed `<tool>…</tool>` into `<tool_result>{json}</tool_result>` token ids.

    The result JSON is encoded as ORDINARY text (`allow_special=False`): a tool that returns, or
    an error message that quotes, `</tool_result>` or `<answer>` must not become a control token,
    so only the two wrapper tags the engine writes itself are special. The hook never raises:
    whatever goes wrong (a stand-in registry that raises, a result that cannot be encoded)
    becomes an error result, and generation goes on.
    """

    def __init__(self, tools: Any, tokenizer: Any):
        self.tools, self.tokenizer = tools, tokenizer
        self.open_id = tokenizer.token_id(open_tag(TOOL))
        self.close_id = tokenizer.token_id(close_tag(TOOL))
        self.result_open = tokenizer.token_id(open_tag(TOOL_RESULT))
        self.result_close = tokenizer.token_id(close_tag(TOOL_RESULT))

    def __call__(self, seq: list[int]) -> tuple[dict, list[int]]:
        """`seq` ends with `</tool>`; returns (call record, ids to inject)."""
        return self.run([seq])[0]

    def run(self, seqs: list[list[int]]) -> list[tuple[dict, list[int]]]:
        """The calls that `seqs` (each ending with `</tool>`) close, executed at the same time
        when the registry can (`execute_calls`: they are independent rows of one decoding step),
        one by one otherwise. One (call record, ids to inject) per seq, in order."""
        from .tools import ToolResult
        texts = []
        for seq in seqs:
            start = len(seq) - 1
            while start > 0 and seq[start - 1] != self.open_id:
                start -= 1
            try:
                texts.append(self.tokenizer.decode(seq[start:-1]) if start > 0 else "")
            except Exception as e:  # noqa: BLE001  a tokenizer bug must not stop generation
                texts.append(e)
        todo = [t for t in texts if isinstance(t, str)]
        try:
            many = getattr(self.tools, "execute_calls", None)
            done = many(todo) if many is not None and len(todo) > 1 else [self.tools.execute_call(t) for t in todo]
        except Exception as e:  # the registry never raises; a stand-in registry might
            done = [(None, None, ToolResult("error", error=f"{type(e).__name__}: {e}"))] * len(todo)
        done = iter(done)
        out = []
        for text in texts:
            if isinstance(text, str):
                name, args, result = next(done)
            else:
                name, args, result, text = None, None, ToolResult("error", error=f"{type(text).__name__}: {text}"), ""
            try:
                body = self.tokenizer.encode(result.to_json(), allow_special=False)
            except Exception as e:  # e.g. a stand-in registry's result that is not JSON
                result = ToolResult("error", error=f"the tool result is not JSON text ({type(e).__name__}: {e})")
                body = self.tokenizer.encode(result.to_json(), allow_special=False)
            ids = [self.result_open, *body, self.result_close]
            out.append(({"name": name, "args": args, "result": result, "text": text}, ids))
        return out


# --- the compiled decode step ---------------------------------------------------------------------
def _decode_logits(model: torch.nn.Module, ids: torch.Tensor, positions: torch.Tensor,
                   cache: KVCache) -> torch.Tensor:
    """One decode step: ids [B, 1] at positions [B, 1] -> logits [B, V] (fp32); writes the cache."""
    return model(ids, positions=positions, kv_cache=cache)[:, -1]


_compiled_decode: Optional[Callable] = None


def compiled_decode() -> Callable:
    """`_decode_logits` under `torch.compile`, built once per process and shared by every call.

    torch.compile guards on the model and the shapes: a new model compiles again, and so does the
    first change of batch size (rows finishing) or cache length (another call), after which that
    dimension is compiled as dynamic and reused. The first call of a new shape takes seconds to
    tens of seconds (Inductor writes and compiles C++ on a CPU), so it pays on long generations.
    """
    global _compiled_decode
    if _compiled_decode is None:
        _compiled_decode = torch.compile(_decode_logits)
    return _compiled_decode


# --- generate -------------------------------------------------------------------------------------
def _eval_mode(fn):
    """Run `fn` under inference_mode with the model in eval mode (no dropout), then restore."""
    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                return fn(model, *args, **kwargs)
        finally:
            model.train(was_training)
    return wrapper


@_eval_mode
def generate(model: torch.nn.Module, prompts: Sequence[Sequence[int]], *,
             max_new_tokens: int = 256, temperature: float = 0.0, top_k: Optional[int] = None,
             top_p: Optional[float] = None, stop_ids: Sequence[int] = (), seed: Optional[int] = None,
             stream: Optional[StreamFn] = None, tools: Any = None, tokenizer: Any = None,
             max_tool_calls: int = 8, interceptor: Optional[InterceptFn] = None,
             compile: bool = False) -> list[Generation]:
    """Batched generation with a KV cache, optional tool execution and token forcing.

    Args:
        model: a `HavocModel` (or anything with `.config` and the same forward signature).
        prompts: B lists of token ids (unequal lengths are fine).
        max_new_tokens: cap on new tokens per row, engine-written ones included; a row also stops at
            `model.config.max_seq_len` total tokens. Either gives finish_reason "length".
        temperature, top_k, top_p: see `sample_next` (temperature 0 = greedy).
        stop_ids: ids that end a row ("stop"); the stop id is kept in `tokens`. Nothing stops by
            default: pass e.g. `[tok.end_id, tok.eos_id]`.
        seed: seeds a `torch.Generator` on the model's device, so a call is reproducible.
        stream: `stream(row, token_ids)` after every step with the ids added to that row (sampled
            and injected together); over a call each token is seen exactly once, in order.
        tools, tokenizer: a `ToolRegistry` (anything with `execute_call(text) -> (name, args,
            ToolResult)`) and the `HavocTokenizer`. When a row samples `</tool>`, the text since its
            last `<tool>` is decoded and executed, and `<tool_result>` + result JSON +
            `</tool_result>` is appended (engine_mask 1) and prefilled with the next step's forward.
        max_tool_calls: calls executed per row; a row that closes one more call ends with
            finish_reason "tool_limit" (that call is not executed).
        interceptor: `interceptor(row, generated_ids) -> None | (token_ids, engine_written)`, called
            after each sampled token (and its tool result) with the row's new ids so far. Returned
            ids are appended (engine_mask = engine_written) and prefilled with the next forward.
            If the sampled token was a stop id, returned ids REPLACE it and the row goes on (e.g.
            PRIME opening a missing `<answer>`). Forced ids never trigger a tool call.
        compile: run the one-token decode steps through `compiled_decode()` (prefill and injection
            stay eager, since their lengths vary). Each decode step then attends over all `max_len`
            cache slots, masked by position, so its shapes stay fixed for the whole call; the
            logits equal the eager path's to float rounding (fp32: the same tokens in the tests;
            bf16 weights: an ulp or two apart, which can flip a near-tie and so a sampled path).
            Where Inductor cannot compile (no C++ compiler, say) one line goes to stderr and the
            call runs eagerly.

    The model runs in eval mode (no dropout) under `torch.inference_mode()`; its training flag
    is restored afterwards, so a trainer can sample mid-run.

    Returns:
        B `Generation`s, in prompt order.

    Raises:
        ValueError: no prompts, an empty prompt, ids outside the vocabulary, a prompt of
            max_seq_len tokens or more, max_new_tokens < 1, or tools without a tokenizer.
    """
    t0 = time.perf_counter()
    cfg = model.config
    prompts = _check_prompts(prompts, cfg)
    if max_new_tokens < 1:
        raise ValueError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    if tools is not None and tokenizer is None:
        raise ValueError("generate: tools need a tokenizer (to decode calls and encode results)")
    hook = _ToolHook(tools, tokenizer) if tools is not None else None
    stop = set(int(s) for s in stop_ids)
    device, dtype = _model_device_dtype(model)
    gen = _make_generator(seed, device)
    decode = compiled_decode() if compile else None

    B = len(prompts)
    limits = [min(len(p) + max_new_tokens, cfg.max_seq_len) for p in prompts]
    max_len = max(limits)
    cache = KVCache(cfg, B, max_len, device, dtype)
    seqs = [list(p) for p in prompts]
    fed = [0] * B
    outs = [Generation() for _ in range(B)]
    active = list(range(B))      # generation index of each cache row

    while active:
        # 1. feed every active row its unfed tokens in one right-padded forward
        chunks = [seqs[r][fed[r]:] for r in active]
        n = [len(c) for c in chunks]
        T = max(n)
        if T == 1:
            ids = torch.tensor(chunks, device=device)
            pos_l = [[fed[r]] for r in active]
            last = None
        else:
            ids_l, pos_l = [], []
            for r, c in zip(active, chunks):
                ids_l.append(c + [cfg.pad_id] * (T - len(c)))
                pos_l.append([min(fed[r] + j, max_len - 1) for j in range(T)])
            ids = torch.tensor(ids_l, device=device)
            last = torch.tensor([k - 1 for k in n], device=device)
        pos = torch.tensor(pos_l, device=device)
        logits = None
        if last is None and decode is not None:
            cache.filled, cache.same_position = max_len, False   # fixed shapes: all slots, masked
            try:
                logits = decode(model, ids, pos, cache)
            except torch._dynamo.exc.BackendCompilerFailed as e:   # compiling failed: nothing ran
                print(f"[engine] torch.compile failed ({str(e).splitlines()[0][:160]}); "
                      "generating without it", file=sys.stderr)
                decode = None
        if logits is None:
            cache.filled = max(p[-1] for p in pos_l) + 1
            cache.same_position = all(p == pos_l[0] for p in pos_l)
            if last is None:
                logits = model(ids, positions=pos, kv_cache=cache)[:, -1]
            elif getattr(model, "supports_logits_index", False):   # the head runs on the last tokens only
                logits = model(ids, positions=pos, kv_cache=cache, logits_index=last)
            else:
                logits = model(ids, positions=pos, kv_cache=cache)[torch.arange(len(active), device=device), last]
        next_ids = sample_next(logits, temperature, top_k, top_p, gen).tolist()

        # 2. run the tool calls this step closed, all at once (independent rows), then append the
        #    sampled tokens, run the interceptor, decide who finishes
        calls = {}
        if hook is not None:
            closing = [i for i, r in enumerate(active) if next_ids[i] == hook.close_id
                       and next_ids[i] not in stop and len(outs[r].tool_calls) < max_tool_calls]
            if closing:
                calls = dict(zip(closing, hook.run([seqs[active[i]] + [next_ids[i]] for i in closing])))
        finished = []
        for i, r in enumerate(active):
            fed[r] += n[i]
            out, seq, tok = outs[r], seqs[r], next_ids[i]
            added, mask, reason = [tok], [0], None
            stopped = tok in stop
            if hook is not None and tok == hook.close_id and not stopped:
                if i not in calls:          # closed past max_tool_calls (see `closing` above)
                    reason = "tool_limit"
                else:
                    record, inject = calls[i]
                    record["step"] = len(out.tokens)
                    out.tool_calls.append(record)
                    added += inject
                    mask += [1] * len(inject)
            if interceptor is not None and reason is None:
                forced = interceptor(r, out.tokens + added)
                if forced and len(forced[0]):
                    forced_ids, engine_written = [int(t) for t in forced[0]], bool(forced[1])
                    if stopped:             # the interceptor overrides the stop: replace it
                        added, mask, stopped = [], [], False
                    added += forced_ids
                    mask += [int(engine_written)] * len(forced_ids)
            if stopped:
                reason = "stop"
            room = limits[r] - len(seq)
            if len(added) >= room and reason is None:
                added, mask, reason = added[:room], mask[:room], "length"
            seq += added
            out.tokens += added
            out.engine_mask += mask
            if stream is not None and added:
                stream(r, list(added))
            if reason is not None:
                out.finish_reason = reason
                finished.append(i)

        # 3. drop finished rows from the batch (compact the cache)
        if finished:
            done = set(finished)
            keep = [i for i in range(len(active)) if i not in done]
            active = [active[i] for i in keep]
            if active:
                cache.keep_rows(torch.tensor(keep, device=device))

    elapsed = time.perf_counter() - t0
    for out in outs:
        out.num_tokens, out.elapsed_s = len(out.tokens), elapsed
    return outs


@_eval_mode
def generate_reference(model: torch.nn.Module, prompt_ids: Sequence[int], *,
                       max_new_tokens: int = 256, temperature: float = 0.0,
                       top_k: Optional[int] = None, top_p: Optional[float] = None,
                       stop_ids: Sequence[int] = (), seed: Optional[int] = None) -> list[int]:
    """Plain cache-free generation for one prompt: a full forward over the whole sequence for
    every new token. Slow (O(T²) per token) and simple: the correctness reference for `generate`
    (same sampling, so with the same seed a single prompt gives the same tokens).

    Returns the new token ids (a sampled stop id included, then it ends).
    Raises:
        ValueError: as `generate`.
    """
    cfg = model.config
    seq = _check_prompts([prompt_ids], cfg)[0]
    device, _ = _model_device_dtype(model)
    gen = _make_generator(seed, device)
    stop = set(int(s) for s in stop_ids)
    new: list[int] = []
    limit = min(len(seq) + max_new_tokens, cfg.max_seq_len)
    while len(seq) < limit:
        logits = model(torch.tensor([seq], device=device))[:, -1]
        tok = int(sample_next(logits, temperature, top_k, top_p, gen)[0])
        seq.append(tok)
        new.append(tok)
        if tok in stop:
            break
    return new
