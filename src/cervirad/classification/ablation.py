"""Clinical vs radiomics vs histogram: importance share of each source and a source ablation.

Sources (:func:`source_of`, from :func:`cervirad.features.stage.category`): ``clinical`` (``clin_*``),
``histogram`` (``hist_*``, with or without a sequence prefix) and ``radiomics`` (every PyRadiomics
class: shape, first order, texture).

* **Importance share** (always): among the final model's selected features, each source's share of
  the summed permutation importance (the stage's permutation importance on the test rows; negative
  means count as 0) and, where the model has one, of its own importance (impurity / gain / mean
  |coefficient|); also how many selected features come from each source.
* **Ablation** (``classification.ablation: true``): the final model's whole tuning procedure (selector,
  k, grid, SMOTE, calibration; one model, the one chosen on all columns) re-run with the columns of
  one source only - on the same fitting and test patients - and scored on the test patients with
  the same bootstrap CIs; the ``all`` row is the main run's final model itself (nothing refitted).
  :func:`write_ablation` writes it to ``classification/ablation.json`` and returns its ``ablation.*`` keys
  for metrics.json.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..features.families import names as family_names
from ..features.stage import category
from ..files import write_json
from ..layout import ABLATION
from .core import Result, evaluate_holdout, fitting
from .data import Table
from .metrics import metric_intervals
from .harmonize import BATCH_FEATURE

SHOWN = ("auc_macro", "accuracy", "balanced_accuracy")
DEFINITION = ("the final model's tuning procedure (selector, k, grid, SMOTE, calibration) re-run on the columns of "
              "one source, same fitting and test patients, test metrics with bootstrap 95 % CIs; 'all' = the main "
              "run's final model")


def sources() -> tuple[str, ...]:
    """Clinical, radiomics, and each feature family of :mod:`cervirad.features.families`."""
    return ("clinical", "radiomics", *family_names())


def source_of(column: str, sequences: tuple[str, ...] = ()) -> str:
    cat = category(column, sequences)
    return cat if cat == "clinical" or cat in family_names() else "radiomics"


def importance_share(names: list[str], perm_mean, model_imp, sequences: tuple[str, ...] = ()) -> dict:
    """Per source: selected features, share of permutation importance (negatives as 0), share of the
    model's importance (None without one)."""
    src = np.array([source_of(n, sequences) for n in names])

    def share(values):
        if values is None:
            return {s: None for s in sources()}
        v = np.clip(np.asarray(values, dtype=float), 0, None)
        total = v.sum()
        return {s: (float(v[src == s].sum() / total) if total > 0 else None) for s in sources()}

    perm, model = share(perm_mean), share(model_imp)
    return {s: {"n_selected": int((src == s).sum()), "permutation_share": perm[s], "model_share": model[s]}
            for s in sources()}


def columns_of(table: Table, source: str, sequences: tuple[str, ...] = ()) -> Table | None:
    """The table restricted to one source's columns (None when it has none)."""
    keep = [j for j, f in enumerate(table.features) if f != BATCH_FEATURE and source_of(f, sequences) == source]
    if not keep:
        return None
    if table.features[-1] == BATCH_FEATURE:  # classification.harmonize: the batch code stays with the rows
        keep.append(len(table.features) - 1)
    return Table(table.X[:, keep], table.y, table.classes, table.ids, [table.features[j] for j in keep], table.name,
                 table.notes)


def _row(source: str, n_cols: int, y, P, groups, n_boot: int, seed: int, model: str) -> dict:
    boot = metric_intervals(y, [P], groups, n_boot, seed)
    return {"source": source, "model": model, "n_columns": n_cols,
            **{k: {kk: (None if isinstance(vv, float) and not np.isfinite(vv) else vv) for kk, vv in boot[k].items()}
               for k in SHOWN}}


def ablation(fit: Table, test: Table, best: str, P_all: np.ndarray, ccfg, seed: int, n_jobs: int,
             cache_dir: str | None, sequences: tuple[str, ...] = (), boot_seed: int = 1000,
             icc=None) -> list[dict]:
    """One row per source (and ``all``): test AUC / accuracy / balanced accuracy with bootstrap CIs.
    ``boot_seed``: every row is bootstrapped on the same resamples (paired); the main run's seed for
    the final model makes the ``all`` row equal its metrics.json values. ``icc``: one perturbation ICC per
    column of ``fit`` (``classification.min_icc``), cut to each source's columns."""
    one = replace(ccfg, models=(best,))
    rows = []
    for source in sources():
        f, t = columns_of(fit, source, sequences), columns_of(test, source, sequences)
        if f is None:
            rows.append({"source": source, "model": best, "n_columns": 0, "note": "no column of this source"})
            continue
        keep = [fit.features.index(c) for c in f.features]
        res = evaluate_holdout(f, t, one, seed, n_jobs, cache_dir, icc=None if icc is None else np.asarray(icc)[keep])
        rows.append(_row(source, len(f.features), test.y, res.probs[best][0], test.ids, ccfg.bootstrap, boot_seed,
                         best))
    rows.append(_row("all", len(fit.features), test.y, P_all, test.ids, ccfg.bootstrap, boot_seed, best))
    return rows


def write_ablation(out: Path, staging: str | Path | None, cfg, res: Result, fit: Table, test: Table, icc) -> dict:
    """The source ablation of the main run's final model -> ``out/ablation.json``; returns metrics.json's
    ``ablation.<source>.<metric>`` keys."""
    best = res.best_model
    with fitting(cfg.execution, staging) as cache:
        rows = ablation(fit, test, best, np.mean(res.probs[best], axis=0), cfg.classification, cfg.run.seed,
                        cfg.execution.workers, cache, tuple(cfg.features.sequences),
                        boot_seed=1000 + list(res.probs).index(best), icc=icc)
    write_json(out / ABLATION, {"definition": DEFINITION, "model": best, "rows": rows})
    return {f"ablation.{r['source']}.{k}": r[k] for r in rows for k in ("auc_macro", "accuracy") if k in r}
