"""The binary sub-tasks of the pathological type (``classification.targets``), on the main task's split.

The label ``Pathologic_typing`` is ``4*large + 2*non_keratinizing + 1*adenocarcinoma`` (SPEC §1), so
each of the three pathology variables is one binary digit of it (weight 4, 2 or 1); a sub-task's
label is that digit of the category, ``category & weight > 0`` - exactly the clinical table's 0/1
column it was computed from, so the feature table needs no separate column:

=====================  ====  ==================================================================
target                 term  label 1 / label 0
=====================  ====  ==================================================================
``large_cell``         4     large cell (categories 4-7) / small cell (0-3)
``non_keratinizing``   2     non-keratinizing (2, 3, 6, 7) / keratinizing (0, 1, 4, 5)
``adenocarcinoma``     1     adenocarcinoma (odd categories) / squamous cell carcinoma (even)
=====================  ====  ==================================================================

Each sub-task is a classify run of its own - every model tuned, the final model chosen by the same
rule, scored on the test patients with bootstrap CIs - on the SAME fitting and test patients and the
SAME feature columns as the main task (:func:`binary_table` changes only the labels); its outputs
go to ``classification/targets/<target>/`` and :func:`side_by_side` lines the tasks up
(:func:`write_targets`: the sub-tasks' folders, ``targets.json``, and the ``target.*`` keys of metrics.json).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files import write_json
from ..layout import TARGETS, TARGETS_SUMMARY
from .core import evaluate_holdout, fitting
from .data import Table
from .results import write_final, write_results

MAIN = "pathologic_typing"
BITS = {"large_cell": 4, "non_keratinizing": 2, "adenocarcinoma": 1}
MEANING = {"large_cell": ("large cell", "small cell"), "non_keratinizing": ("non-keratinizing", "keratinizing"),
           "adenocarcinoma": ("adenocarcinoma", "squamous cell carcinoma")}
SHOWN = ("auc_macro", "accuracy", "balanced_accuracy", "f1_macro")


def definition(target: str) -> str:
    pos, neg = MEANING[target]
    w = BITS[target]
    return (f"1 = {pos}, 0 = {neg}: category & {w} > 0, the {w}* term of Pathologic_typing = 4*large + "
            "2*non_keratinizing + 1*adenocarcinoma")


def sub_targets(targets) -> list[str]:
    """The binary sub-tasks to run besides the main task (order kept, duplicates dropped)."""
    return [t for t in dict.fromkeys(targets) if t != MAIN]


def binary_table(table: Table, target: str) -> Table:
    """``table`` with the label replaced by the sub-task's 0/1 (rows, ids and features unchanged)."""
    category = np.array([int(v) for v in table.classes[table.y]])
    y = (category & BITS[target] > 0).astype(int)
    return Table(table.X, y, np.array([0, 1]), table.ids, table.features, table.name,
                 table.notes + [f"target {target}: {definition(target)}"])


def check_both_classes(fit: Table, target: str) -> None:
    n = np.bincount(fit.y, minlength=2)
    if n.min() == 0:
        pos, neg = MEANING[target]
        raise InputError(f"Target '{target}': the fitting patients hold {n[1]} {pos} and {n[0]} {neg} case(s); a "
                         f"binary task needs both. Remove '{target}' from classification.targets or add patients.")


def side_by_side(metrics: dict[str, dict], n_test: dict[str, int], positives: dict[str, int]) -> list[dict]:
    """One row per task: its best model and that model's metrics (value and CI) on the test patients."""
    rows = []
    for target, m in metrics.items():
        best = m["best_model"]
        rows.append({"target": target, "definition": "0..7 category" if target == MAIN else definition(target),
                     "best_model": best, "n_test": n_test[target], "n_test_positive": positives.get(target),
                     **{k: m.get(f"{best}.{k}") for k in SHOWN}})
    return rows


def write_targets(out: Path, staging: str | Path | None, cfg, subs: list[str], fit: Table, test: Table,
                  predicted: Table | None, train_hash: str, icc, main_metrics: dict,
                  levels: list[str] | None) -> dict:
    """Each binary sub-task: a classify run on the same patients and columns -> ``out/targets/<target>/``, the
    tasks side by side -> ``out/targets.json``; returns metrics.json's ``target.<target>.<metric>`` keys.
    ``main_metrics``: the main task's metrics; ``levels``: its batch levels when harmonised (the same here)."""
    metrics = {MAIN: main_metrics}
    n_test, positives = {MAIN: len(test.y)}, {}
    for t in subs:
        f, e = binary_table(fit, t), binary_table(test, t)
        check_both_classes(f, t)
        p = binary_table(predicted, t) if predicted is not None else None
        with fitting(cfg.execution, staging) as cache:
            r = evaluate_holdout(f, e, cfg.classification, cfg.run.seed, cfg.execution.workers, cache, icc=icc)
        results = write_results(out / TARGETS / t, r, f, e, cfg, train_hash,
                                {"split": "test", "target": t, "target_definition": definition(t)}, predicted=p,
                                batch_levels=levels)
        write_final(out / TARGETS / t, results)
        metrics[t] = results.metrics
        n_test[t], positives[t] = len(e.y), int(e.y.sum())
    table = side_by_side(metrics, n_test, positives)
    write_json(out / TARGETS_SUMMARY, {"rows": table, "folders": {t: f"{TARGETS}/{t}" for t in subs}})
    return {f"target.{r['target']}.{k}": r[k] for r in table if r["target"] in subs for k in SHOWN}
