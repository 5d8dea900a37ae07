"""CRFE k-fold cross-validation on the 37 real MRI volumes: test Dice / HD95 (bootstrap 95 % CI over
patients) against the mapping ceiling (Dice of a restored PERFECT prediction), wall time, config.

Data: ``../shared/data/ibsi_sts_mri/STS_xxx/MR_T1_{image,mask}.nii.gz`` (IBSI subset of TCIA
Soft-tissue-Sarcoma, T1w, expert GTV masks; see that folder's README). A segmentation-only
cohort: a manifest (patient_id, t1w, mask) and no clinical table.

How the folds are run (true disjoint k-fold: every patient is tested exactly once):

1. ``run_stages(cfg, RunDir(work/prep), ["preprocess"])`` validates and preprocesses the whole
   cohort once with the library (canonical LPS, resampling, z-score, whole slices, meta). Its
   own splits.json (a 70/15/15 split) is ignored: preprocessing itself does not depend on it.
2. Folds: ``StratifiedKFold`` over patients, stratified by lesion-volume tertile (the same strata
   the library uses for a segmentation-only cohort). Per fold, the non-test patients are cut
   into train/val with the library's :func:`cervirad.splits.make_split` (same tertile strata,
   fractions (1 - val, val, 0)).
3. Per fold, a run folder ``work/foldK`` holds a symlink ``preprocess -> ../prep/preprocess``
   and its own ``splits.json`` naming the fold's train/val/test patients; the train-seg stage
   function (:func:`cervirad.segmentation.train_stage`) is called in a
   ``RunDir.stage("train-seg")`` context, exactly as the orchestrator calls it: it trains CRFE
   (early stopping on the val patients, component selection chosen on them), predicts the test
   patients, restores the probabilities onto each ORIGINAL grid and scores them
   (``segmentation/per_patient.csv``). The only glue is that splits.json and the symlink.
4. Pooled over folds (every one of the 37 patients tested once): mean Dice and HD95 with the library's percentile
   bootstrap (:func:`cervirad.segmentation.metrics.summarise`).

Mapping ceiling (the "baseline" of this benchmark), per patient on its original grid:
``soft_mask(mask, meta_grid(meta), slice_axis)`` is the perfect probability map; restored with
:func:`cervirad.preprocess.restore_mask` (linear, thresholded on the original grid) vs the
original mask -> Dice. Also shown: the thresholded training label (``prep.mask``) restored the
same way, and that label restored by nearest neighbour (the pre-issue-10 mapping).

Usage::

    .venv/bin/python scripts/bench/sts_cv.py            # 5 folds over the 37 volumes
    .venv/bin/python scripts/bench/sts_cv.py --recipes plan,plan+ctx+one,plan+ctx+one+warm1 --budget 8 --threads 1  # issue 25 table
    .venv/bin/python scripts/bench/sts_cv.py --quick    # fold 1 only, 2 epochs (smoke run)
    .venv/bin/python scripts/bench/sts_cv.py --folds 6 --epochs 20 --lstm-hidden 256 --keep runs/sts_cv
    # issue 12: training recipes side by side under one wall-clock budget per fold (compare_recipes)
    .venv/bin/python scripts/bench/sts_cv.py --folds 6 --recipes plan,paper,unet --budget 3 --no-tta
    .venv/bin/python scripts/bench/sts_cv.py --folds 6 --recipes plan,paper --budgets 5,15,45   # Dice vs budget
    .venv/bin/python scripts/bench/sts_cv.py --folds 6 --recipes plan --budget 1 --inner-folds 5  # 5-model ensembles
    .venv/bin/python scripts/bench/sts_cv.py --folds 6 --loader   # loader ms per batch, paper vs plan
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "ibsi_sts_mri"


def build_config(a: argparse.Namespace, manifest: Path):
    from cervirad.config import from_dict

    return from_dict({
        "run": {"name": "sts_cv", "seed": a.seed},
        "data": {"source": "manifest", "manifest": str(manifest), "clinical": None, "sequences": ["t1w"]},
        "preprocess": {"spacing": list(a.spacing), "slice_axis": "axial", "normalize": "volume"},
        "features": {"sequences": ["t1w"]},
        "segmentation": {"model": "crfe", "input_sequences": ["t1w"], "lstm_hidden": a.lstm_hidden,
                         "epochs": a.epochs, "early_stopping_patience": a.patience, "batch_size": a.batch,
                         "train_crop": a.crop, "max_train_slices_per_epoch": a.max_train_slices,
                         "max_val_slices": a.max_val_slices, "num_threads": a.threads, "device": "cpu",
                         "bootstrap": a.bootstrap, "n_overlays": 0, "recurrence": a.recurrence, "plan": False,
                         **({"tta_mirror": False, "sliding_window": "never"} if a.no_tta else {})},
        "execution": {"n_jobs": a.threads},
    })


def write_manifest(path: Path) -> list[str]:
    import pandas as pd

    cases = sorted(d for d in DATA.glob("STS_*") if (d / "MR_T1_image.nii.gz").is_file())
    if not cases:
        sys.exit(f"no STS_xxx/MR_T1_image.nii.gz under {DATA}")
    pd.DataFrame({"patient_id": [d.name for d in cases], "t1w": [str(d / "MR_T1_image.nii.gz") for d in cases],
                  "mask": [str(d / "MR_T1_mask.nii.gz") for d in cases]}).to_csv(path, index=False)
    return [d.name for d in cases]


def lesion_tertiles(prep: Path, ids: list[str], spacing) -> dict[str, int]:
    """Lesion-volume tertile (0, 1, 2) per patient from the preprocess index (as split_for_cohort does)."""
    import numpy as np
    import pandas as pd

    df = pd.read_csv(prep / "preprocess" / "slices.csv", dtype={"patient_id": str})
    ml = df.groupby("patient_id").lesion_pixels.sum() * float(np.prod(spacing)) / 1000.0
    cuts = np.quantile([ml[p] for p in ids], [1 / 3, 2 / 3])
    return {p: int(np.searchsorted(cuts, ml[p], side="right")) for p in ids}


def folds(ids: list[str], strata: dict[str, int], k: int, val_fraction: float, seed: int) -> list[dict]:
    """k disjoint test folds (stratified by tertile); train/val of the rest by the library's make_split."""
    from sklearn.model_selection import StratifiedKFold

    from cervirad.splits import make_split

    out = []
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (rest, test) in enumerate(skf.split(ids, [strata[p] for p in ids])):
        rest_ids = [ids[j] for j in rest]
        parts = make_split(rest_ids, {p: strata[p] for p in rest_ids}, (1 - val_fraction, val_fraction, 0.0),
                           seed + i, stratify=True)
        out.append({"train": parts["train"], "val": parts["val"], "test": sorted(ids[j] for j in test),
                    "seed": seed + i, "stratified_by": "lesion_volume_tertile", "fold": i + 1, "k": k})
    return out


def run_fold(cfg, prep: Path, fold_dir: Path, split: dict, cohort, arch: str = "crfe",
             plan_yaml: str | None = None) -> tuple["pd.DataFrame", dict, float]:
    """Train-seg stage on one fold's run folder (with ``plan_yaml`` as its plan.yaml); (per-patient test
    table of ``arch``, its metrics.json, seconds)."""
    import pandas as pd

    from cervirad.files import write_json
    from cervirad.layout import RELATIVE
    from cervirad.rundir import RunDir
    from cervirad.segmentation import train_stage
    from cervirad.stages import stage_inputs

    if fold_dir.exists():
        shutil.rmtree(fold_dir)
    fold_dir.mkdir(parents=True)
    (fold_dir / "preprocess").symlink_to(prep / "preprocess", target_is_directory=True)
    run = RunDir(fold_dir, cfg)
    write_json(run.splits, split)
    if plan_yaml is not None:
        run.plan.write_text(plan_yaml, encoding="utf-8")
    t0 = time.perf_counter()
    with run.stage("train-seg", key=f"sts_cv fold {split['fold']}", resumable=False,
                   replace=(RELATIVE.segmentation_dir(), RELATIVE.masks_dir())) as st:
        metrics = train_stage(cfg, stage_inputs("train-seg", run.path, cohort), st, progress=False)[arch]
    seconds = time.perf_counter() - t0
    per = pd.read_csv(run.segmentation_dir(arch) / "per_patient.csv", dtype={"patient_id": str})
    return per, metrics, seconds


def mapping_ceiling(prep: Path, cohort, ids: list[str]) -> "pd.DataFrame":
    """Per patient, Dice on the original grid of: the perfect soft map restored (linear), the
    thresholded training label restored (linear), and that label restored by nearest neighbour."""
    import numpy as np
    import pandas as pd
    import SimpleITK as sitk

    from cervirad.io import read_image, to_array
    from cervirad.preprocess import grid_image, load_meta, load_patient_slices, meta_grid, restore_mask, soft_mask
    from cervirad.segmentation.metrics import overlap_metrics

    rows = []
    for pid in ids:
        p = cohort.patient(pid)
        ref = read_image(p.images["t1w"], pid, "t1w")
        mask = read_image(p.mask, pid, "mask")
        truth = to_array(mask, np.uint8) > 0
        meta = load_meta(prep, pid)
        perfect = soft_mask(mask, meta_grid(meta), meta["slice_axis"])
        label = np.asarray(load_patient_slices(prep, pid)[1], dtype=np.float32)
        nn = sitk.Resample(grid_image(label, meta), ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0,
                           sitk.sitkFloat32)

        def dice(img: sitk.Image) -> float:
            return overlap_metrics(to_array(img, np.float32) > 0.5, truth)["dice"]

        rows.append({"patient_id": pid, "perfect_soft": dice(restore_mask(perfect, meta, ref)),
                     "label_linear": dice(restore_mask(label, meta, ref)), "label_nearest": dice(nn)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- recipes (issue 12)
RECIPES = ("plan", "plan_adam", "paper", "unet")
# issue 25: a recipe may carry modifiers, e.g. plan+ctx2+one+warm1 or unet+ctx+one:
#   +ctxK  segmentation.context_slices = K (kept over the plan); +ctx = the plan's choice from the slice spacing;
#          without it context_slices stays 0 (today's 2-D recipe)
#   +one   segmentation.lesions = one (one component per patient, never empty)
#   +warmM segmentation.pretrain_minutes = M (self-supervised warm start inside the budget)


def parse_recipe(name: str) -> tuple[str, dict]:
    """(base recipe, {context: int | 'plan', one: bool, warm: float}) of ``name``."""
    base, *mods = name.split("+")
    out: dict = {"context": 0, "one": False, "warm": 0.0}
    for m in mods:
        if m == "ctx":
            out["context"] = "plan"
        elif m.startswith("ctx") and m[3:].isdigit():
            out["context"] = int(m[3:])
        elif m == "one":
            out["one"] = True
        elif m.startswith("warm"):
            out["warm"] = float(m[4:] or 1)
        else:
            sys.exit(f"unknown recipe modifier {m!r} in {name!r}; use +ctx, +ctxK, +one, +warmM")
    return base, out


def recipe_config(a: argparse.Namespace, base, recipe: str, budget: float):
    """The config of one recipe under ``budget`` training minutes per fold.

    - ``paper``: the fixed recipe of this benchmark (``build_config``: Adam 1e-3 + cosine over
      ``--epochs``, batch ``--batch``, ``--crop`` patches, the paper's sampler and augmentation, no
      deep supervision, no test-time mirroring), stopped when the budget is spent;
    - ``plan``: ``segmentation.plan`` on (plan.yaml per fold from the fingerprint and a timing probe):
      nnU-Net's SGD + poly, deep supervision, foreground oversampling, its augmentations, patch, batch,
      epochs and slices per epoch from the budget, test-time mirroring and sliding window (unless
      ``--no-tta``: then every recipe predicts whole slices, unmirrored); the
      preprocessing (spacing) is the benchmark's, shared by every recipe, and ``folds`` is
      ``--inner-folds`` (default 1: inner cross-validation spends the budget once per inner model,
      so K budgets per outer fold);
    - ``plan_adam``: the plan recipe with the paper's Adam (lr 1e-3) and cosine schedule kept
      (``segmentation.plan_keep``);
    - ``unet``: the plan recipe with the U-Net baseline (``segmentation.model: unet``).
    """
    from cervirad.config import from_dict

    recipe, mods = parse_recipe(recipe)
    d = base.to_dict()
    seg = d["segmentation"]
    seg["budget_minutes"] = budget
    seg["lesions"] = "one" if mods["one"] else "any"
    seg["pretrain_minutes"] = mods["warm"]
    if mods["context"] != "plan":
        seg["context_slices"] = mods["context"]
    if recipe == "paper":
        seg.update(plan=False, tta_mirror=False, sliding_window="never")
        return from_dict(d)
    defaults = from_dict({}).segmentation
    for key in ("epochs", "early_stopping_patience", "batch_size", "train_crop", "max_train_slices_per_epoch",
                "max_val_slices", *(() if a.no_tta else ("tta_mirror", "sliding_window"))):
        seg[key] = getattr(defaults, key)
    seg["folds"] = a.inner_folds  # 1 (default) or nnU-Net's k-fold ensemble inside each outer fold
    keep = ["segmentation.folds", "preprocess.spacing"] + (["segmentation.context_slices"]
                                                           if mods["context"] != "plan" else [])
    if recipe == "plan_adam":
        keep += ["segmentation.optimizer", "segmentation.scheduler"]
    seg.update(plan=True, plan_keep=keep, model="unet" if recipe == "unet" else "crfe")
    if recipe == "unet":  # its parameter count matched to CRFE's at the same input channels
        seg["unet_width"] = None
    return from_dict(d)


def fold_plan(cfg, fp: dict, s_per_sample: float | None) -> dict:
    """A fold's plan, as the plan stage makes it (the probe is measured once per recipe)."""
    from cervirad.segmentation.plan import available_memory, make_plan

    return {"enabled": True, **make_plan(fp, cfg, "cpu", available_memory("cpu")[0], s_per_sample)}


def compare_recipes(a: argparse.Namespace, work: Path, prep: Path, base, splits: list[dict], cohort,
                    t_prep: float) -> int:
    """Every recipe of ``--recipes`` at every budget: k-fold CV, pooled Dice / HD95 / detection rate with
    bootstrap CIs, misses, wall time; a Dice-vs-budget table; the goal line (mean Dice >= 0.80, no miss)."""
    import json as _json

    import numpy as np
    import pandas as pd
    import yaml

    from cervirad.segmentation.metrics import summarise
    from cervirad.segmentation.budget import probe_seconds_per_sample
    from cervirad.segmentation.plan import apply_decisions, make_plan

    recipes = [r.strip() for r in a.recipes.split(",") if r.strip()]
    bad = [r for r in recipes if parse_recipe(r)[0] not in RECIPES]
    if bad:
        sys.exit(f"unknown recipe {bad[0]!r}; choose from {', '.join(RECIPES)}")
    budgets = [float(b) for b in a.budgets.split(",")] if a.budgets else [a.budget]
    fp = _json.loads((prep / "fingerprint.json").read_text(encoding="utf-8"))
    folds = splits[: a.max_folds] if a.max_folds else splits
    print(f"STS T1w recipes {recipes} x budgets {budgets} min/fold | {len(folds)} of {a.folds} folds | "
          f"{a.threads} threads, CPU | preprocess {t_prep:.0f} s, spacing {list(base.preprocess.spacing)} mm")
    rows = []
    for budget in budgets:
        for recipe in recipes:
            cfg = recipe_config(a, base, recipe, budget)
            s_per, plan = None, None
            if cfg.segmentation.plan:
                first = apply_decisions(cfg, make_plan(fp, cfg, "cpu")["decisions"])
                s_per = probe_seconds_per_sample(first, cfg.segmentation.model,
                                                 2 * first.segmentation.context_slices + 1,
                                                 first.segmentation.train_crop, "cpu")
            per_all, t0, train_s, epochs = [], time.perf_counter(), [], []
            for sp in folds:
                fold_dir = work / f"{recipe}_{budget:g}" / f"fold{sp['fold']}"
                fold_dir.parent.mkdir(parents=True, exist_ok=True)
                plan = fold_plan(cfg, fp, s_per) if cfg.segmentation.plan else None
                per, m, sec = run_fold(cfg, prep, fold_dir, sp, cohort, arch=cfg.segmentation.model,
                                       plan_yaml=yaml.safe_dump(plan, sort_keys=False) if plan else None)
                per_all.append(per.assign(fold=sp["fold"]))
                train_s.append(m["train_seconds"])
                epochs.append(m["epochs_run"])
                unproc = (f" (before post-processing {per.dice_unprocessed.mean():.3f}, fallback "
                          f"{int(per.lesion_fallback.sum())})" if "dice_unprocessed" in per else "")
                print(f"  {recipe:9s} {budget:g} min fold {sp['fold']}: test Dice {per.dice.mean():.3f}{unproc} | HD95 "
                      f"{np.nanmean(per.hd95_mm):.1f} mm | detected {int(per.detected.sum())}/{len(per)} | epochs "
                      f"{m['epochs_run']} (best {m['best_epoch']}, val Dice {m['best_val_dice']:.3f}) | train "
                      f"{m['train_seconds']:.0f} s | fold {sec:.0f} s", flush=True)
            per = pd.concat(per_all, ignore_index=True)
            summ = summarise(per, a.bootstrap, a.seed)
            wall = time.perf_counter() - t0
            if plan is not None:
                dec = {k.split(".")[-1]: v["value"] for k, v in plan["decisions"].items()
                       if v["source"] == "plan" and "augmentation" not in k}
                print(f"  {recipe} plan (last fold): {dec}; probe {s_per:.3f} s/sample")
            rows.append({"recipe": recipe, "budget_min": budget, "n": len(per), "summary": summ, "wall_s": wall,
                         "per": per, "train_min": float(np.mean(train_s)) / 60.0, "epochs": float(np.mean(epochs))})
    print("\nrecipe x budget -> pooled over the test patients of every fold (95 % bootstrap CI over patients)")
    print(f"  {'recipe':22s} {'min/fold':>8s}  {'Dice':>22s}  {'HD95 mm':>22s}  {'detection':>22s}  misses  "
          "Dice before post-proc  train min/fold  epochs  wall")
    for r in rows:
        d, h, det = r["summary"]["dice"], r["summary"]["hd95_mm"], r["summary"]["detection_rate"]
        u = r["summary"].get("dice_unprocessed")
        ustr = f"{u['value']:.3f} [{u['ci_low']:.3f}, {u['ci_high']:.3f}]" if u else "-"
        print(f"  {r['recipe']:22s} {r['budget_min']:8g}  {d['value']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]  "
              f"{h['value']:6.1f} [{h['ci_low']:6.1f}, {h['ci_high']:6.1f}]  {det['value']:.3f} [{det['ci_low']:.3f}, "
              f"{det['ci_high']:.3f}]  {r['summary'].get('n_patients_missed', 0):6d}  {ustr:22s}  "
              f"{r['train_min']:14.1f}  {r['epochs']:6.1f}  {r['wall_s'] / 60:.1f} min")
    if len(budgets) > 1:
        print("Dice vs budget: " + " | ".join(
            f"{rec}: " + ", ".join(f"{r['budget_min']:g} min {r['summary']['dice']['value']:.3f}"
                                   for r in rows if r["recipe"] == rec) for rec in recipes))
    best = max(rows, key=lambda r: r["summary"]["dice"]["value"])
    ok = best["summary"]["dice"]["value"] >= 0.80 and best["summary"].get("n_patients_missed", 1) == 0
    print(f"GOAL (mean Dice >= 0.80, no lesion missed): {'MET' if ok else 'NOT MET'} - best {best['recipe']} at "
          f"{best['budget_min']:g} min/fold: Dice {best['summary']['dice']['value']:.3f}, "
          f"{best['summary'].get('n_patients_missed', 0)} missed of {best['n']}")
    if a.keep:
        pd.concat([r["per"].assign(recipe=r["recipe"], budget_min=r["budget_min"]) for r in rows]).to_csv(
            work / "recipes_per_patient.csv", index=False)
    return 0


def time_loader(a: argparse.Namespace, prep: Path, base) -> int:
    """Seconds per training batch of the loader (slices, crop, augmentation) for the paper's and the plan's
    sampling and augmentation, at the plan's batch and patch on this cohort's training slices."""
    import json as _json

    import numpy as np

    from cervirad.segmentation.data import epoch_slices, load_slice_set, oversampled_epoch, training_batches
    from cervirad.segmentation.plan import apply_decisions, make_plan

    fp = _json.loads((prep / "fingerprint.json").read_text(encoding="utf-8"))
    planned = apply_decisions(recipe_config(a, base, "plan", a.budget),
                              make_plan(fp, recipe_config(a, base, "plan", a.budget), "cpu")["decisions"])
    paper = recipe_config(a, base, "paper", a.budget)
    s = planned.segmentation
    paper_s = paper.segmentation.__class__(**{**paper.segmentation.__dict__, "batch_size": s.batch_size})
    data = load_slice_set(prep, "train")
    patch = s.train_crop
    for name, cfg in (("paper", paper_s), ("plan", s)):
        rng = np.random.default_rng(0)
        forced = None
        if cfg.foreground_oversampling is None:
            order = epoch_slices(data.rows, cfg, rng)[: 40 * cfg.batch_size]
        else:
            order, forced = oversampled_epoch(data.rows, cfg, rng)
            order, forced = order[: 40 * cfg.batch_size], forced[: 40 * cfg.batch_size]
        t0 = time.perf_counter()
        n = sum(1 for _ in training_batches(data, order, cfg, rng, patch, forced))
        dt = (time.perf_counter() - t0) / max(1, n)
        print(f"loader {name}: {dt * 1000:.1f} ms per batch of {cfg.batch_size} at {patch} px ({n} batches)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=5, help="outer folds over all patients (every fold is run)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=3, help="early-stopping patience (epochs)")
    ap.add_argument("--crop", type=int, default=96, help="segmentation.train_crop (training patch side)")
    ap.add_argument("--lstm-hidden", type=int, default=64)
    ap.add_argument("--recurrence", choices=("rows", "rows+cols"), default="rows", help="segmentation.recurrence")
    ap.add_argument("--no-tta", action="store_true", help="plain whole-slice inference (no mirroring, no sliding "
                    "window): faster scoring, e.g. to compare two networks")
    ap.add_argument("--max-train-slices", type=int, default=160, help="segmentation.max_train_slices_per_epoch")
    ap.add_argument("--max-val-slices", type=int, default=64, help="segmentation.max_val_slices")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--val-fraction", type=float, default=0.2, help="share of each fold's non-test patients for "
                    "early stopping (stratified: 3 of 12 with 3 folds)")
    ap.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 3.27), metavar=("COL", "ROW", "THICK"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="smoke run: fold 1 of the k only, 2 epochs")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    ap.add_argument("--recipes", default=None, help="compare training recipes under one CPU budget per fold, e.g. "
                    "plan,paper,unet (see compare_recipes); default: the single fixed recipe above")
    ap.add_argument("--budget", type=float, default=2.0, help="with --recipes: training minutes per fold")
    ap.add_argument("--budgets", default=None, help="with --recipes: several budgets (minutes per fold), e.g. "
                    "5,15,45: a Dice-vs-budget curve")
    ap.add_argument("--inner-folds", type=int, default=1, help="with --recipes plan/unet: segmentation.folds inside "
                    "each outer fold (K >= 2: a K-model ensemble on its train+val patients, the budget per model)")
    ap.add_argument("--max-folds", type=int, default=None, help="with --recipes: run only the first N of the k folds")
    ap.add_argument("--loader", action="store_true", help="time the training loader per batch (paper vs plan "
                    "augmentation and sampling) and exit")
    a = ap.parse_args()
    if a.quick:
        a.epochs = 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import numpy as np
    import pandas as pd
    import torch

    from cervirad.pipeline import configured_cohort, run_stages
    from cervirad.rundir import RunDir
    from cervirad.segmentation.metrics import summarise

    torch.set_num_threads(a.threads)
    t_all = time.perf_counter()
    work = Path(a.keep).resolve() if a.keep else Path(tempfile.mkdtemp(prefix="sts_cv_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        manifest = work / "manifest.csv"
        ids = write_manifest(manifest)
        cfg = build_config(a, manifest)
        prep = work / "prep"
        t0 = time.perf_counter()
        run_stages(cfg, RunDir(prep), ["preprocess"])
        t_prep = time.perf_counter() - t0
        cohort = configured_cohort(cfg, prep)
        strata = lesion_tertiles(prep, ids, cfg.preprocess.spacing)
        splits = folds(ids, strata, a.folds, a.val_fraction, a.seed)
        if a.quick:
            splits = splits[:1]
        if a.loader:
            return time_loader(a, prep, cfg)
        if a.recipes:
            return compare_recipes(a, work, prep, cfg, splits, cohort, t_prep)
        s = cfg.segmentation
        print(f"STS T1w k-fold CRFE ({len(ids)} patients, {a.folds} folds{', QUICK: fold 1 only' if a.quick else ''}, "
              f"{a.threads} threads, CPU); preprocess {t_prep:.0f} s")
        print(f"  config: spacing {list(cfg.preprocess.spacing)} mm axial, z-score volume | CRFE lstm_hidden "
              f"{s.lstm_hidden} recurrence {s.recurrence}, train_crop {s.train_crop}, batch {s.batch_size}, epochs {s.epochs} (patience "
              f"{s.early_stopping_patience}), max_train_slices/epoch {s.max_train_slices_per_epoch}, max_val_slices "
              f"{s.max_val_slices}, lesion_free_fraction {s.lesion_free_fraction}, lr {s.lr} cosine, component "
              f"selection {s.component_selection}, seed {a.seed}")
        per_all = []
        for sp in splits:
            per, m, sec = run_fold(cfg, prep, work / f"fold{sp['fold']}", sp, cohort)
            per_all.append(per.assign(fold=sp["fold"]))
            post = m.get("postprocessing", {}).get("component_selection")
            print(f"  fold {sp['fold']}/{a.folds}: train {len(sp['train'])} / val {len(sp['val'])} / test "
                  f"{len(sp['test'])} patients | test Dice {per.dice.mean():.3f} | HD95 "
                  f"{np.nanmean(per.hd95_mm):.1f} mm | best epoch {m['best_epoch']}/{m['epochs_run']} "
                  f"(val Dice {m['best_val_dice']:.3f}) | component selection {'on' if post else 'off'} | "
                  f"{sec:.0f} s", flush=True)
        per = pd.concat(per_all, ignore_index=True)
        summ = summarise(per, a.bootstrap, a.seed)
        ceil = mapping_ceiling(prep, cohort, list(per.patient_id))
        wall = time.perf_counter() - t_all
        d, h = summ["dice"], summ["hd95_mm"]
        cd = float(ceil.perfect_soft.mean())
        undefined = summ.get("n_patients_hd_undefined", 0)
        print(f"  mapping ceiling (restored perfect soft map) Dice mean {cd:.4f} min {ceil.perfect_soft.min():.4f} | "
              f"thresholded label restored linearly mean {ceil.label_linear.mean():.4f} min "
              f"{ceil.label_linear.min():.4f} | label restored nearest-neighbour (old mapping) mean "
              f"{ceil.label_nearest.mean():.4f} min {ceil.label_nearest.min():.4f}")
        print(f"SUMMARY: {len(per)} test patients | Dice {d['value']:.3f} [95% CI {d['ci_low']:.3f}, "
              f"{d['ci_high']:.3f}] | HD95 {h['value']:.1f} mm [{h['ci_low']:.1f}, {h['ci_high']:.1f}]"
              f"{f' ({undefined} undefined: empty prediction)' if undefined else ''} | ceiling Dice {cd:.4f} | "
              f"test/ceiling x{d['value'] / cd:.3f} | wall {wall:.0f} s ({wall / 60:.1f} min)")
        if a.keep:
            per.to_csv(work / "per_patient_all_folds.csv", index=False)
            ceil.to_csv(work / "mapping_ceiling.csv", index=False)
            (work / "summary.json").write_text(json.dumps({"metrics": summ, "ceiling_dice_mean": cd,
                                                           "wall_s": wall, "config": cfg.to_dict()},
                                                          indent=1, default=str))
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
