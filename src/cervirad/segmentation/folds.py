"""K-fold ensembles (nnU-Net's 5-fold cross-validation ensemble; issue 12).

With ``segmentation.folds`` = K >= 2 the training and validation patients of ``splits.json``
are pooled and split into K disjoint folds (a seeded permutation, fold sizes differing by at most
one patient). Model k trains on the other K - 1 folds and uses fold k for early stopping and
model selection, exactly as the single model uses the validation part; the TEST patients are in
no fold (checked, not assumed). Each fold trains in its own folder ``fold_<k>/`` (its own
``last.pt``), so a killed run resumes in the fold it was in and finished folds are not retrained.

The ensemble ``model.pt`` holds every fold's weights (``folds``); at inference their
probabilities are averaged (:class:`~cervirad.segmentation.infer.LoadedModel`). Post-processing is
chosen once on the pooled out-of-fold predictions (each held-out patient predicted by the model
that did not train on it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..splits import load_splits
from ..errors import InputError
from ..layout import FOLD_CURVES, MODEL_PT
from .data import SliceSet


def fold_parts(train_val: list[str], test: list[str], k: int, seed: int) -> list[list[str]]:
    """The held-out patients of each of ``k`` folds over ``train_val`` (sorted ids, seeded shuffle)."""
    ids = sorted(dict.fromkeys(train_val))
    leaked = sorted(set(ids) & set(test))
    if leaked:
        raise InputError(f"Test patient(s) {leaked[:3]} are also training/validation patients in splits.json; the "
                         "test patients must be in no fold — rerun `cervirad preprocess` to rebuild the split.")
    if k > len(ids):
        raise InputError(f"segmentation.folds is {k} but only {len(ids)} training+validation patients exist; set "
                         f"segmentation.folds to at most {len(ids)} (or 1 for a single model).")
    order = np.random.default_rng(seed).permutation(len(ids))
    return [sorted(ids[i] for i in part) for part in np.array_split(order, k)]


def run_fold_parts(run_path: Path, k: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """(train+val patients, the held-out patients of each fold) for the run's split."""
    splits = load_splits(run_path)
    train_val = list(splits["train"]) + list(splits["val"])
    return train_val, fold_parts(train_val, list(splits["test"]), k, seed)


def merge(a: SliceSet, b: SliceSet) -> SliceSet:
    """The slices of two split parts as one set."""
    rows = pd.concat([a.rows, b.rows]).sort_values(["patient_id", "slice"]).reset_index(drop=True)
    return SliceSet(a.run_path, rows, {**a.images, **b.images}, {**a.masks, **b.masks}, a.context)


def subset(data: SliceSet, ids: list[str]) -> SliceSet:
    """The slices of the patients ``ids`` only."""
    keep = set(ids)
    rows = data.rows[data.rows.patient_id.isin(keep)].reset_index(drop=True)
    return SliceSet(data.run_path, rows, {p: v for p, v in data.images.items() if p in keep},
                    {p: v for p, v in data.masks.items() if p in keep}, data.context)


def ensemble_checkpoint(fold_models: list[Path], held_out: list[list[str]], read) -> dict:
    """One checkpoint holding every fold's weights (``folds``); its header and ``state_dict`` are fold 0's.
    ``read`` loads a checkpoint dict (:func:`~cervirad.segmentation.checkpoint.read_checkpoint`)."""
    cks = [read(p) for p in fold_models]
    folds = [{"fold": i, "state_dict": ck["state_dict"], "val_patients": list(ids), "best_epoch": ck.get("epoch"),
              "best_val_dice": ck.get("val_dice")} for i, (ck, ids) in enumerate(zip(cks, held_out))]
    return {**cks[0], "n_folds": len(folds), "folds": folds}


def plot_fold_curves(logs: list[pd.DataFrame], path: Path, title: str) -> Path:
    """Validation Dice (each fold on its held-out patients) and training loss per epoch, one line per fold."""
    from ..plotting import pyplot, save_figure

    plt = pyplot()

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    for i, df in enumerate(logs):
        a.plot(df.epoch, df.val_dice, "o-", ms=3, label=f"fold {i}")
        b.plot(df.epoch, df.train_loss, "o-", ms=3, label=f"fold {i}")
    a.set(xlabel="epoch", ylabel="Dice", title="validation Dice (held-out fold)", ylim=(0, 1))
    b.set(xlabel="epoch", ylabel="loss", title="training loss")
    a.legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)


def fold_curves_path(seg_dir: Path) -> Path:
    return Path(seg_dir) / FOLD_CURVES


def fold_model(fold_dir: Path) -> Path:
    return Path(fold_dir) / MODEL_PT


__all__ = ["fold_parts", "run_fold_parts", "merge", "subset", "ensemble_checkpoint", "plot_fold_curves"]
