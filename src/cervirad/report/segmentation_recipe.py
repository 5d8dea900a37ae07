"""The report's section on issue 12's segmentation recipe: the training plan (``plan.yaml``), the
k-fold ensemble (per-fold validation curves and results) and the ensemble against fold 0 alone on
the test patients, with the test-time augmentation used.

Reads only the run's ``plan.yaml``, ``config.yaml`` and what train-seg wrote in ``segmentation/``
(``metrics.json`` with ``per_fold`` / ``single_fold_test``, ``fold_curves.png``). No file, no section.
"""
from __future__ import annotations

import html
from functools import partial

import yaml

from ..layout import FOLD_CURVES, METRICS, Layout
from .artifacts import read_optional
from .markup import ROUNDED, Section, cell, figure, gallery, table

_val = partial(cell, cells=ROUNDED)  # a number in the text: 3 decimals, 'n/a' when missing


def _yaml(path) -> dict:
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _listed(v):
    """A list (a spacing, a patch size) reads as its items: '1.4, 1.4, 4.0'."""
    return ", ".join(str(x) for x in v) if isinstance(v, (list, tuple)) else v


def plan_html(run: Layout) -> str:
    """The plan's decisions (value, source, why) and its fold rule; empty without plan.yaml."""
    plan = _yaml(run.plan)
    if not plan:
        return ""
    decisions = plan.get("decisions") or {}
    rows = [[k, _listed(d.get("value")), d.get("source"), d.get("why")] for k, d in decisions.items()]
    out = ["<h3>Training plan (plan.yaml)</h3>"]
    if not plan.get("enabled", True):
        out.append(f"<p>{html.escape(str(plan.get('why', 'the plan is off')))}</p>")
    if rows:
        out.append(table(rows, ["setting", "value", "source", "why"], ROUNDED))
    out.append(f"<p>Folds: {_val(plan.get('folds', 1))} ({_val(plan.get('folds_reason', ''))}).</p>")
    return "".join(out)


def inference_html(run: Layout, m: dict) -> str:
    """The test-time augmentation behind the test metrics (``inference`` in metrics.json; the resolved
    config's settings for metrics written before it was recorded)."""
    s = m.get("inference") or (_yaml(run.config_yaml).get("segmentation") or {})
    if not s:
        return ""
    n_models = s.get("n_models", m.get("n_folds", 1))
    mirror = "on (identity, horizontal, vertical and both flips averaged)" if s.get("tta_mirror") else "off"
    window = {"auto": "auto (Gaussian-weighted windows of the training patch, sigma = patch/8, step = patch/2, on "
                      "slices larger than the patch)", "never": "never (whole slices)"}.get(s.get("sliding_window"),
                                                                                           str(s.get("sliding_window")))
    return (f"<h3>Inference</h3><p>Test-time mirroring: {html.escape(mirror)}. Sliding window: {html.escape(window)}."
            f" Models averaged: {_val(n_models)}.</p>")


def folds_html(run: Layout, m: dict) -> str:
    """Per-fold table and curves, and the ensemble against fold 0 alone on the test patients."""
    per_fold = m.get("per_fold") or []
    if not per_fold:
        return ""
    rows = [[f["fold"], f.get("n_train_patients"), len(f.get("val_patients") or []), f.get("best_epoch"),
             f.get("best_val_dice"), f.get("epochs_run"), f.get("train_seconds")] for f in per_fold]
    out = [f"<h3>{len(per_fold)}-fold ensemble: each fold validated on its held-out patients</h3>",
           table(rows, ["fold", "training patients", "held-out patients", "best epoch", "best validation Dice",
                        "epochs run", "training s"], ROUNDED)]
    curves = run.segmentation_dir() / FOLD_CURVES
    if curves.is_file():
        out.append(gallery([figure(curves, "per-fold validation curves")]))
    single = m.get("single_fold_test") or {}
    if single:
        cmp_rows = [[f"ensemble of {len(per_fold)} folds", m.get("dice"), m.get("hd95_mm"), m.get("detection_rate")],
                    ["fold 0 alone", single.get("dice"), single.get("hd95_mm"), single.get("detection_rate")]]
        out.append(f"<h3>Ensemble vs single fold (test patients, n = {_val(m.get('n_patients'))}, bootstrap "
                   "95 % CI)</h3>" + table(cmp_rows, ["model", "Dice", "HD95 (mm)", "detection rate"], ROUNDED))
    post = m.get("postprocessing") or {}
    if "val_dice_with" in post:
        out.append(f"<p class='muted'>Component selection {'on' if post.get('component_selection') else 'off'}: "
                   f"chosen on the pooled out-of-fold predictions of {_val(post.get('n_val_patients'))} patients "
                   f"(Dice {_val(post.get('val_dice_without'))} without, {_val(post.get('val_dice_with'))} "
                   "with).</p>")
    return "".join(out)


def input_post_html(m: dict) -> str:
    """2.5-D context, warm start, the one-lesion rule (fallback cases counted) and the budget split."""
    inf, post = m.get("inference") or {}, m.get("postprocessing") or {}
    if not inf and not post:
        return ""
    items = [f"input: {_val(inf.get('context_slices', 0))} context slice(s) per side"]
    if post.get("lesions") == "one":
        items.append(f"one lesion per patient: {_val(m.get('n_lesion_fallback', 0))} of {_val(m.get('n_patients'))} "
                     f"test patients had no voxel above the threshold and got the fallback component (threshold "
                     f"{_val(post.get('fallback_threshold'))}, chosen on {_val(post.get('n_val_patients'))} "
                     "validation patients)")
    if "dice_unprocessed" in m:
        items.append(f"Dice before post-processing {_val(m['dice_unprocessed'])}, after {_val(m.get('dice'))}")
    warm = m.get("warm_start")
    if warm:
        items.append(f"self-supervised warm start: {_val(warm.get('steps'))} in-painting steps in "
                     f"{_val(warm.get('seconds'))} s on {len(warm.get('patients') or [])} training patients "
                     f"(loss {_val(warm.get('loss_first'))} -> {_val(warm.get('loss_last'))})")
    if m.get("budget_minutes"):
        items.append(f"training budget of this model: {_val(m['budget_minutes'])} min (its share of "
                     "segmentation.budget_minutes; plan.yaml: budget_split)")
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def recipe_sections(run: Layout) -> list[Section]:
    """The segmentation-recipe section (plan, inference, folds), or none when train-seg has not run."""
    m = read_optional(run.segmentation_dir() / METRICS) or {}
    body = plan_html(run) + (inference_html(run, m) + input_post_html(m) if m else "") + folds_html(run, m)
    return [("seg-recipe", "Segmentation recipe: plan, test-time augmentation, fold ensemble", body)] if body else []


__all__ = ["recipe_sections", "plan_html", "inference_html", "folds_html"]
