"""CRFE recurrence 'rows' vs 'rows+cols' (ReNet) on the demo cohort at an equal training budget:
best and last-epoch validation Dice, training slices/s, and CPU inference ms/slice (cost per slice).

The demo cohort is validated and preprocessed once (the demo preset, its own 70/15/15 split);
then, per recurrence and seed, the library's :class:`~cervirad.segmentation.train.Trainer` trains
on its train patients with early stopping on its validation patients, as train-seg does (same
epochs, slices per epoch, crops and validation slices for both recurrences).
Cost per slice: the shipped inference path (:func:`optimise_for_inference`) at 256 x 256,
batch 1, best of ``--repeats``, with the same threads, for each recurrence.

The real-cohort comparison is ``scripts/bench/sts_cv.py --recurrence rows|rows+cols``.

Usage: .venv/bin/python scripts/bench/recurrence.py [--seeds 42 43] [--epochs 6] [--threads 2]
Ends with one line: the rows+cols Dice gain over rows (goal: > 0 to make it the default).
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

RECURRENCES = ("rows", "rows+cols")


def infer_ms(recurrence: str, lstm_hidden: int, repeats: int) -> float:
    """Shipped-path ms per 256 x 256 slice at batch 1 for an untrained CRFE with this recurrence."""
    import torch

    from cervirad.segmentation.model import build_model, optimise_for_inference

    torch.manual_seed(0)
    net = optimise_for_inference(build_model("crfe", 1, lstm_hidden, recurrence=recurrence).eval())
    x = torch.randn(1, 1, 256, 256).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 2):
            t0 = time.perf_counter()
            net(x)
            if i >= 2:
                times.append(time.perf_counter() - t0)
    return 1000.0 * min(times)


def train_one(cfg, prep: Path, work: Path) -> dict:
    """The library's Trainer on the run's train/val slices (early stopping and checkpoints as in
    train-seg); the test split is not scored here (sts_cv.py scores held-out patients)."""
    from cervirad.segmentation.data import load_slice_set
    from cervirad.segmentation.model import count_parameters
    from cervirad.segmentation.train import Trainer

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    train, val = load_slice_set(prep, "train"), load_slice_set(prep, "val")
    trainer = Trainer(cfg, "crfe", train, val, work, key="recurrence bench", progress=False)
    r = trainer.fit()
    return {"best_val_dice": r.best_val_dice, "last_val_dice": float(r.log.val_dice.iloc[-1]),
            "train_slices_per_s": r.train_slices_per_s, "parameters": count_parameters(trainer.model),
            "epochs_run": r.epochs_run}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43], help="training seeds (torch init, batches)")
    ap.add_argument("--epochs", type=int, default=6, help="segmentation.epochs (the demo preset's 6)")
    ap.add_argument("--patients", type=int, default=100)
    ap.add_argument("--max-train-slices", type=int, default=200, help="segmentation.max_train_slices_per_epoch "
                    "(the demo preset's 200)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10, help="inference timing repeats")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import numpy as np
    import torch

    from cervirad.config import load_config
    from cervirad.pipeline import run_stages
    from cervirad.rundir import RunDir

    torch.set_num_threads(a.threads)
    work = Path(a.keep).resolve() if a.keep else Path(tempfile.mkdtemp(prefix="recurrence_"))
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    try:
        base = [f"data.demo_patients={a.patients}", f"segmentation.epochs={a.epochs}",
                f"segmentation.max_train_slices_per_epoch={a.max_train_slices}",
                f"segmentation.num_threads={a.threads}", "segmentation.device=cpu", "segmentation.n_overlays=0",
                "segmentation.bootstrap=200", f"execution.n_jobs={a.threads}"]
        cfg = load_config("demo", base)
        prep = work / "prep"
        run_stages(cfg, RunDir(prep), ["preprocess"])
        s = cfg.segmentation
        print(f"CRFE recurrence on the demo cohort ({a.patients} patients, {a.threads} threads, CPU): epochs "
              f"{s.epochs} (patience {s.early_stopping_patience}), {s.max_train_slices_per_epoch} slices/epoch, "
              f"crop {s.train_crop}, batch {s.batch_size}, val slices {s.max_val_slices}, lstm_hidden "
              f"{s.lstm_hidden}, seeds {a.seeds}")
        res = {}
        for rec in RECURRENCES:
            rows = []
            for seed in a.seeds:
                c = load_config("demo", base + [f"segmentation.recurrence={rec}", f"run.seed={seed}"])
                t0 = time.perf_counter()
                m = train_one(c, prep, work / f"{rec.replace('+', '_')}_{seed}")
                rows.append((m["best_val_dice"], m["last_val_dice"], m["train_slices_per_s"],
                             time.perf_counter() - t0, m["parameters"]))
                print(f"  {rec:9s} seed {seed}: best val Dice {rows[-1][0]:.3f} | last-epoch val Dice "
                      f"{rows[-1][1]:.3f} ({m['epochs_run']} epochs) | {rows[-1][2]:.1f} train slices/s | "
                      f"{rows[-1][3]:.0f} s", flush=True)
            r = np.array(rows)
            res[rec] = {"val": r[:, 0].mean(), "last": r[:, 1].mean(), "train": r[:, 2].mean(), "params": r[0, 4],
                        "ms": infer_ms(rec, s.lstm_hidden, a.repeats)}
        print(f"  {'recurrence':10s} | {'val Dice':>8s} | {'last-epoch':>10s} | {'train sl/s':>10s} | "
              f"{'infer ms/slice':>14s} | params")
        for rec, v in res.items():
            print(f"  {rec:10s} | {v['val']:8.3f} | {v['last']:10.3f} | {v['train']:10.1f} | {v['ms']:14.1f} | "
                  f"{int(v['params']):,}")
        r, rc = res["rows"], res["rows+cols"]
        gain = rc["val"] - r["val"]
        print(f"wall {time.perf_counter() - t_all:.0f} s")
        print(f"crfe recurrence demo: rows+cols val Dice {rc['val']:.3f} (goal > rows; rows {r['val']:.3f}; "
              f"{gain:+.3f}; cost x{rc['ms'] / r['ms']:.2f} ms/slice) {'MET' if gain > 0 else 'NOT MET'}")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
