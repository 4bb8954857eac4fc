"""What the notebooks show: loss plots, the live training view (`LiveMonitor`), history, memory
and PRIME tables, and the PRIME demo widget. Reached through `havoc_lite.colab`."""
from __future__ import annotations

from typing import Any, Optional, Sequence

BUDGETS = ("auto", "minimal", "light", "medium", "heavy")


# --- plots and tables -------------------------------------------------------------------------
def plot_history(hist: dict, title: str = "training", ax=None):
    """Train loss per step (and eval loss where measured) of a `Trainer.train()` history; returns
    the matplotlib Figure."""
    import matplotlib.pyplot as plt
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.5))
    else:
        fig = ax.figure
    ax.plot(hist["step"], hist["loss"], lw=1, label="train loss")
    if hist.get("eval_step"):
        ax.plot(hist["eval_step"], hist["eval_loss"], "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


class LiveMonitor:
    """`Trainer.train(on_step=LiveMonitor(...))`: a live view of a training cell.

    Every `plot_every` steps it redraws the loss curve of the whole run (`trainer.history`, which
    the checkpoint carries, so the curve continues after a disconnect and resume) and a status line
    with the measured steps/s and the ETA to `max_steps`; every `sample_every` steps (0: never) it
    adds a greedy sample of `prompt_ids` (a list of token ids) decoded with `tokenizer`. In a
    notebook the plot and text update in place (IPython display handles); elsewhere the status
    line is printed. Sampling uses the engine's own seeded generator, so the training RNG (and exact
    resume) is untouched; it is skipped under torchrun, where every rank must run each forward.
    """

    def __init__(self, title: str = "training", plot_every: int = 25, sample_every: int = 0,
                 tokenizer=None, prompt_ids: Optional[Sequence[int]] = None, max_new_tokens: int = 32,
                 tools: Any = None):
        self.title, self.plot_every, self.sample_every = title, max(1, plot_every), sample_every
        self.tokenizer, self.prompt_ids, self.max_new_tokens, self.tools = tokenizer, prompt_ids, max_new_tokens, tools
        self.samples: list[tuple[int, str]] = []
        self._t0, self._step0, self._handles = None, None, None

    def _show(self, fig, text: str) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import display
            shell = get_ipython()
        except ImportError:
            shell = None
        if shell is None:
            print(text)
            return
        if self._handles is None:
            self._handles = (display(fig, display_id=True), display({"text/plain": text}, raw=True,
                                                                    display_id=True))
        else:
            self._handles[0].update(fig)
            self._handles[1].update({"text/plain": text}, raw=True)

    def sample(self, trainer) -> Optional[str]:
        """A greedy continuation of `prompt_ids` from the model being trained (then back to train mode)."""
        import torch
        from . import engine
        if self.tokenizer is None or not self.prompt_ids or trainer.dist.enabled:
            return None
        model = trainer.raw_model
        model.eval()
        try:
            with torch.no_grad(), trainer.autocast:
                out = engine.generate(model, [list(self.prompt_ids)], max_new_tokens=self.max_new_tokens,
                                      seed=0, stop_ids=[self.tokenizer.end_id, self.tokenizer.eos_id],
                                      tools=self.tools, tokenizer=self.tokenizer)[0]
        finally:
            model.train()
        return self.tokenizer.decode(out.tokens)

    def __call__(self, trainer) -> None:
        import time
        import matplotlib.pyplot as plt
        now, step, end = time.perf_counter(), trainer.step, trainer.cfg.max_steps
        if self._t0 is None:
            self._t0, self._step0 = now, step - 1
        if self.sample_every and step % self.sample_every == 0:
            text = self.sample(trainer)
            if text is not None:
                self.samples.append((step, text))
        if step % self.plot_every and step != end:
            return
        rate = (step - self._step0) / max(now - self._t0, 1e-9)
        eta = (end - step) / max(rate, 1e-9)
        hist = trainer.history
        line = (f"{self.title}: step {step:,}/{end:,}, loss {hist['loss'][-1]:.4f}, "
                f"{rate:.2f} steps/s, ETA {eta / 60:.1f} min")
        if self.samples:
            line += "\n" + "\n".join(f"  sample @ step {s}: {t!r}" for s, t in self.samples[-3:])
        fig = plot_history(hist, self.title)
        self._show(fig, line)
        plt.close(fig)


def history_frame(hist: dict):
    """A `Trainer.train()` history as a pandas DataFrame (step, loss, lr, grad_norm, tokens_per_s)."""
    import pandas as pd
    keys = [k for k in ("step", "loss", "lr", "grad_norm", "tokens_per_s") if hist.get(k)]
    return pd.DataFrame({k: hist[k] for k in keys})


def memory_frame(preset: str, gpus: Sequence[str] = ("t4-16", "a100-40", "a100-80"),
                 batch_size: int = 16, seq_len: int = 512):
    """Memory planner (`havoc_lite.memory.plan`) for `preset`: one row per phase, GiB per GPU
    and whether it fits each card."""
    import pandas as pd
    from .memory import GiB, plan
    rows = []
    for phase, ckpt in (("pretrain", False), ("pretrain", True), ("inference", False)):
        p = plan(preset, phase, gpus[0], batch_size, seq_len, grad_checkpointing=ckpt, suggest=False)
        row = {"phase": phase + (" + grad ckpt" if ckpt else ""), "GiB": round(p.total / GiB, 2)}
        for g in gpus:
            row[g] = "fits" if plan(preset, phase, g, batch_size, seq_len, ckpt, suggest=False).fits else "no"
        rows.append(row)
    return pd.DataFrame(rows)


def prime_frame(results: Sequence[Any]):
    """PRIME results as a DataFrame: question, budget, answer, tool calls, verified, tokens, s."""
    import pandas as pd
    return pd.DataFrame([{
        "question": r.prompt[:60], "budget": r.routing.budget.value, "answer": r.answer,
        "tool_calls": len(r.tool_calls),
        "tool_ok": sum(c["result"].status == "success" for c in r.tool_calls),
        "verified": r.checks.passed, "forced": ",".join(r.forced_sections),
        "tokens": r.num_tokens, "seconds": round(r.elapsed_s, 2)} for r in results])


# --- PRIME demo widget ------------------------------------------------------------------------
def prime_demo(model, tokenizer, questions: Sequence[str], max_new_tokens: Optional[int] = None,
               tools: Any = None):
    """A budget selector (ipywidgets Dropdown: auto | minimal | light | medium | heavy), a question
    picker and a Run button over `generate_with_prime`; the output area shows the folded turn
    (`chat.render_turn`) and a one-row table.

    Returns:
        (widget, run): display `widget`; `run(budget, question=None) -> PrimeResult` is the same
        handler the button calls (notebooks in smoke mode call it directly).
    """
    import ipywidgets as w
    from IPython.display import display
    from .chat import render_turn
    from .prime import generate_with_prime

    budget = w.Dropdown(options=list(BUDGETS), value="auto", description="budget")
    question = w.Combobox(options=list(questions), value=questions[0], description="question",
                          layout=w.Layout(width="90%"))
    button = w.Button(description="Run PRIME", button_style="primary")
    out = w.Output()

    def run(budget_name: str, q: Optional[str] = None):
        q = q or question.value
        result = generate_with_prime(model, tokenizer, q, budget=None if budget_name == "auto" else budget_name,
                                     max_new_tokens=max_new_tokens, tools=tools)
        with out:
            out.clear_output()
            print(f"Q: {q}\nbudget {result.routing.budget.value} ({'; '.join(result.routing.reasons)})")
            print(render_turn(result.text, show_sections=False).strip())
            display(prime_frame([result]))
        return result

    button.on_click(lambda _: run(budget.value))
    return w.VBox([w.HBox([budget, button]), question, out]), run
