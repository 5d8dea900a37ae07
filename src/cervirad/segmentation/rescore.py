"""Scores of a trained segmentation redone without training: the two ways a run's test scores change.

- :func:`rescore_stage` (the ``rescore`` of stage ``train-seg``): a scoring setting changed
  (``segmentation.bootstrap``). Every ``metrics.json`` under ``segmentation/`` with its
  ``per_patient.csv`` beside it gets its intervals again from those per-patient scores (the run's
  model, each network trained beside it, fold 0 of an ensemble), and ``comparison.csv`` follows.
  Nothing is predicted again: the files are those a training with the new setting writes.
- :func:`segment_stage` (stage ``segment`` of :data:`cervirad.stages.SEGMENT_STAGES`, ``cervirad
  segment --run-dir``): a trained model (the run's own or ``--model``) predicts and scores the run's
  test patients again; its masks, overlays and metrics become the run's segmentation results.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import InputError
from ..jsonutil import jsonable
from ..files import read_json, write_json
from ..layout import COMPARISON, FOLD_DIR, METRICS, PER_PATIENT

SINGLE_FOLD = ("dice", "hd95_mm", "detection_rate", "n_patients")  # an ensemble's fold-0 scores (train-seg)


def rescore_stage(cfg, inputs, st) -> dict:
    """New intervals in every scored ``metrics.json`` of ``inputs``' ``segmentation/`` (written into ``st``);
    returns {run-relative metrics path: metrics}."""
    from . import write_comparison
    from .metrics import summarise
    from .selection import homes

    seg = inputs["segmentation"]
    scored = sorted((p for p in seg.rglob(METRICS) if (p.parent / PER_PATIENT).is_file()),
                    key=lambda p: (-len(p.parts), str(p)))  # fold 0 before the ensemble that quotes it
    out: dict[str, dict] = {}
    for path in scored:
        old = read_json(path)
        new = summarise(pd.read_csv(path.parent / PER_PATIENT), cfg.segmentation.bootstrap, cfg.run.seed)
        metrics = jsonable({**new, **{k: v for k, v in old.items() if k not in new}})  # train-seg's key order
        fold0 = out.get(str(path.parent.relative_to(inputs.root) / FOLD_DIR.format(0) / METRICS))
        if "single_fold_test" in metrics and fold0 is not None:
            metrics["single_fold_test"] = {m: fold0.get(m) for m in SINGLE_FOLD}
        rel = path.relative_to(inputs.root)
        write_json(st.path(rel), metrics)
        out[str(rel)] = metrics
    if (seg / COMPARISON).is_file():
        write_comparison(st, [inputs, st], list(homes(st, cfg.segmentation).values()))
    return out


def segment_stage(cfg, inputs, st, model: str, replace: bool = False) -> dict:
    """Score ``model`` on the run's test patients into ``st`` (:func:`cervirad.segmentation.evaluate_run`). A
    model other than the run's own replaces the run's results only with ``replace`` (``--force``); the stage
    then says so (``st.info["replaced_by"]``), so that the next ``run-all`` retrains the run's own model."""
    from . import evaluate_run
    from .checkpoint import read_checkpoint

    own, path = inputs.seg_model(), Path(model)
    foreign = not own.is_file() or path.resolve() != own.resolve()
    if foreign and own.is_file() and not replace:
        raise InputError(f"Run '{inputs.root}' has its own trained segmentation; scoring '{path}' would replace its "
                         "masks and metrics. Pass --force to do so, or another --run-dir.")
    read_checkpoint(path)  # one clear line for a file that is no model.pt, before anything is replaced
    metrics = evaluate_run(cfg, inputs, inputs.cohort, path, st)
    if foreign:
        st.info["replaced_by"] = str(path)
    return metrics
