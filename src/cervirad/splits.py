"""The one patient-level train/val/test split every stage uses: made once (preprocess), stored in the
run folder's ``splits.json``, read back by every later stage."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError
from .files import read_json
from .layout import Layout


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
    data = read_json(p)
    return {k: list(data[k]) for k in ("train", "val", "test")}


def split_of(splits: dict[str, list[str]]) -> dict[str, str]:
    """Map patient id -> 'train' | 'val' | 'test'."""
    return {pid: part for part in ("train", "val", "test") for pid in splits.get(part, [])}
