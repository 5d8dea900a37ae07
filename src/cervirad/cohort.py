"""Cohort resolution from the config, the pathology label, and the one patient split.

``Pathologic_typing`` = 4·large + 2·non-keratinizing + 1·adenocarcinoma (SPEC §1), giving
categories 0..7 (paper Table 7).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config, DataConfig, show
from .errors import InputError
from .io import Cohort, load_cohort
from .layout import Layout

LABEL = "Pathologic_typing"
CATEGORY_NAMES = {
    0: "small keratinizing SCC",
    1: "small keratinizing adenocarcinoma",
    2: "small non-keratinizing SCC",
    3: "small non-keratinizing adenocarcinoma",
    4: "large keratinizing SCC",
    5: "large keratinizing adenocarcinoma",
    6: "large non-keratinizing SCC",
    7: "large non-keratinizing adenocarcinoma",
}


def pathology_columns(data: DataConfig) -> dict[str, str]:
    return {"large": data.large_column, "non_keratinizing": data.non_keratinizing_column,
            "adenocarcinoma": data.adenocarcinoma_column}


def pathology_problems(clinical: pd.DataFrame, data: DataConfig) -> list[str]:
    """One line per missing pathology column or per patient with a value other than 0/1."""
    problems = []
    for role, col in pathology_columns(data).items():
        if col not in clinical.columns:
            problems.append(f"Clinical table lacks pathology column '{col}' ({role}); add it (0/1 per patient) "
                            f"or set data.{role}_column.")
            continue
        for pid, v in zip(clinical[data.id_column], clinical[col]):
            if pd.isna(v) or v not in (0, 1, 0.0, 1.0, True, False):
                problems.append(f"Invalid pathology value for case '{pid}': column '{col}' is {show(v)}, expected 0 or 1; "
                                "correct the clinical table.")
    return problems


def pathologic_typing(clinical: pd.DataFrame, data: DataConfig) -> pd.Series:
    """The 0..7 category per patient, indexed by patient id."""
    problems = pathology_problems(clinical, data)
    if problems:
        raise InputError(problems[0])
    cols = pathology_columns(data)
    y = (4 * clinical[cols["large"]].astype(int) + 2 * clinical[cols["non_keratinizing"]].astype(int)
         + clinical[cols["adenocarcinoma"]].astype(int))
    return pd.Series(y.to_numpy(), index=clinical[data.id_column].astype(str), name=LABEL)


def demo_cohort_dir(run_path: Path) -> Path:
    return Layout(run_path).cohort_dir


def cohort_from_config(cfg: Config, run_path: Path | None = None) -> Cohort:
    """Load the configured cohort; for ``data.source: demo`` write the demo cohort first."""
    d = cfg.data
    if d.source == "demo":
        if run_path is None:
            raise InputError("data.source is 'demo' but no run directory was given; pass --run-dir.")
        from .demo import ensure_demo_cohort

        manifest, clinical = ensure_demo_cohort(demo_cohort_dir(run_path), d.demo_patients, d.demo_seed,
                                              scanners=d.demo_scanners)
    else:
        manifest, clinical = Path(d.manifest), Path(d.clinical) if d.clinical else None
    cohort = load_cohort(manifest, clinical, d.id_column, d.sequences, d.mask_column)
    if run_path is not None:  # RTSTRUCT / DICOM-SEG masks: rasterised once into the run's cache
        from .dicom.masks import resolve_contour_masks

        cohort = resolve_contour_masks(cohort, d.mask_roi, Layout(run_path).cache_dir("dicom_masks"))
    return cohort


# --------------------------------------------------------------------------- split
def make_split(ids: list[str], labels: dict[str, int] | None, fractions: tuple[float, float, float],
               seed: int, stratify: bool = True) -> dict[str, list[str]]:
    """Patient-level train/val/test split, stratified by label where every class allows it.

    Each class is shuffled and cut by the fractions (largest-remainder rounding), so a class
    with >= 3 members appears in every part; rarer classes go to train first.
    """
    rng = np.random.default_rng(seed)
    ids = sorted(ids)
    if stratify and labels:
        groups: dict[int, list[str]] = {}
        for pid in ids:
            groups.setdefault(int(labels[pid]), []).append(pid)
    else:
        groups = {0: ids}
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for key in sorted(groups):
        members = list(groups[key])
        rng.shuffle(members)
        n = len(members)
        n_val, n_test = int(round(n * fractions[1])), int(round(n * fractions[2]))
        if n >= 3:
            n_val, n_test = max(n_val, 1 if fractions[1] > 0 else 0), max(n_test, 1 if fractions[2] > 0 else 0)
        n_train = n - n_val - n_test
        parts["train"] += members[:n_train]
        parts["val"] += members[n_train:n_train + n_val]
        parts["test"] += members[n_train + n_val:]
    return {k: sorted(v) for k, v in parts.items()}


def load_splits(run_path: Path) -> dict[str, list[str]]:
    p = Layout(run_path).splits
    if not p.is_file():
        raise InputError(f"Run directory '{run_path}' has no splits.json; run `cervirad preprocess` first.")
    data = json.loads(p.read_text(encoding="utf-8"))
    return {k: list(data[k]) for k in ("train", "val", "test")}


def split_of(splits: dict[str, list[str]]) -> dict[str, str]:
    """Map patient id -> 'train' | 'val' | 'test'."""
    return {pid: part for part in ("train", "val", "test") for pid in splits.get(part, [])}
