"""The smoke run's SFT stage with one padded example per row against packed rows, in one run.

    OMP_NUM_THREADS=1 python scripts/sft_packing_smoke.py --out /tmp/pack_smoke \
        --variants padded:600:160:16 packed:300:160:16

Runs the smoke tokenizer and pretrain stages once, then for each variant `name:steps:seq_len:batch`
("padded" = SFTLoader, "packed" = PackedSFTLoader), optionally `:lr` (peak lr; min_lr stays a tenth
of it; `sft_smoke.yaml`'s 3e-3 otherwise) the SFT stage from the same pretrained
checkpoint and the PRIME stage (held-out calculator problems, accuracy with the tool). Prints per
variant: SFT seconds (wall and this process's CPU; on a shared machine the CPU seconds are the
steadier figure), loss-bearing token share per step, padding efficiency, held-out accuracy.
"""
from __future__ import annotations

import argparse
import json
import time

from havoc_lite.smoke import Smoke, SmokeArgs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/pack_smoke")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse-pretrain", action="store_true", help="keep a pretrain checkpoint in --out")
    ap.add_argument("--variants", nargs="+", default=["padded:600:160:16", "packed:300:160:16"])
    args = ap.parse_args()
    smoke = Smoke(SmokeArgs(out=args.out, device="cpu", seed=args.seed))
    smoke.out.mkdir(parents=True, exist_ok=True)
    assert smoke.run_stage("tokenizer", smoke.stage_tokenizer)
    pretrained = smoke.out / "pretrain" / f"step_{smoke.sizes.pretrain_steps:06d}"
    if not (args.reuse_pretrain and pretrained.is_dir()):     # the tokenizer is deterministic
        assert smoke.run_stage("pretrain", smoke.stage_pretrain)
    base_config = smoke.train_config
    rows = []
    for spec in args.variants:
        name, steps, seq_len, batch, *lr = spec.split(":")
        smoke.sizes.sft_steps = int(steps)

        def config(config="sft_smoke", max_steps=None, **fields):
            if config == "sft_smoke":
                fields.update(packing=name == "packed", batch_size=int(batch), seq_len=int(seq_len),
                              out_dir=str(smoke.out / f"sft_{spec.replace(':', '_')}"))
                if lr:
                    fields.update(lr=float(lr[0]), min_lr=float(lr[0]) / 10)
            return base_config(config, max_steps, **fields)

        smoke.train_config = config
        from havoc_lite import train as train_mod
        loaders = []
        orig = train_mod.build_loaders
        train_mod.build_loaders = lambda *a, **k: loaders.append(orig(*a, **k)) or loaders[-1]
        t0, c0 = time.perf_counter(), time.process_time()
        ok = smoke.run_stage("sft", smoke.stage_sft)
        sft_s, sft_cpu = time.perf_counter() - t0, time.process_time() - c0
        train_mod.build_loaders = orig
        loader = loaders[0][0]
        ok = ok and smoke.run_stage("prime", smoke.stage_prime)
        prime = smoke.results["stages"]["prime"]
        rows.append({"variant": spec, "sft_seconds": round(sft_s, 1), "sft_cpu_seconds": round(sft_cpu, 1),
                     "loss_token_share": round(loader.loss_token_share, 3),
                     "padding_efficiency": round(loader.padding_efficiency, 3),
                     "examples_seen": loader.num_examples, "truncated": loader.num_truncated,
                     "eval_loss": smoke.results["stages"]["sft"].get("eval_loss"),
                     # the PRIME stage's templated test problems (held-out problems from the training
                     # templates) and its other phrasings, both with the calculator
                     "accuracy_with_tool": prime.get("in_template", {}).get("accuracy"),
                     "accuracy_other_phrasings": prime.get("heldout", {}).get("accuracy"), "ok": ok})
        print(json.dumps(rows[-1]), flush=True)
    print("\nvariant               sft_s  sft_cpu_s  loss_share  pad_eff  examples  truncated  acc_tool")
    for r in rows:
        print(f"{r['variant']:<20} {r['sft_seconds']:>6} {r['sft_cpu_seconds']:>10} {r['loss_token_share']:>10} "
              f"{r['padding_efficiency']:>8} "
              f"{r['examples_seen']:>9} {r['truncated']:>10} {r['accuracy_with_tool']:>9}")


if __name__ == "__main__":
    main()
