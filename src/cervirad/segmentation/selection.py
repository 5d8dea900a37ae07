"""Which networks train-seg trains, where each one's artifacts go, and ``segmentation.model: auto``.

The run's model is the one in ``segmentation/`` (``model.pt``, ``metrics.json``, ...) with its test
masks in ``masks/``: what ``features-predicted``, ``evaluate`` and the report read. Networks
trained beside it (``segmentation.compare``, or ``also_train_unet``) each get
``segmentation/<name>/`` with their masks in ``segmentation/<name>/masks/``.

With ``segmentation.model: auto`` every candidate (``compare``, empty = every network of
:data:`cervirad.networks.NETWORKS`) trains in ``segmentation/<name>/`` on the same split with the same
settings, and the one with the highest VALIDATION Dice (``best_val_dice`` of its metrics: the
pooled Dice of the validation slices at its best epoch; for a fold ensemble the mean over the
folds of each fold's held-out Dice) is copied to ``segmentation/`` and ``masks/``, so it becomes
the run's model. Ties go to the earlier candidate in the list. The test patients play no part in
the choice; every candidate is still scored on them for the comparison table.
"""
from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..layout import FOLD_DIR, MASKS, METRICS, MODEL_PT, Layout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Home:
    """Where one network's artifacts go: ``dir`` (model.pt, metrics.json, curves, overlays, folds) and
    ``masks`` (its predicted test masks)."""

    arch: str
    dir: Path
    masks: Path

    @property
    def model(self) -> Path:
        return self.dir / MODEL_PT

    @property
    def metrics(self) -> Path:
        return self.dir / METRICS

    def fold(self, k: int) -> Path:
        return self.dir / FOLD_DIR.format(k)


def run_home(layout: Layout, arch: str) -> Home:
    """The run's model: ``segmentation/`` and ``masks/``."""
    return Home(arch, layout.segmentation_dir(), layout.masks_dir())


def side_home(layout: Layout, arch: str) -> Home:
    """A network trained beside the run's model: ``segmentation/<arch>/``."""
    d = layout.segmentation_dir() / arch
    return Home(arch, d, d / MASKS)


def trained_networks(s) -> list[str]:
    """The networks train-seg trains for segmentation settings ``s``, the run's model (or, for auto,
    the first candidate) first."""
    from ..networks import NETWORKS

    if s.model == "auto":
        return list(dict.fromkeys(s.compare or NETWORKS))
    return list(dict.fromkeys([s.model, *s.compare, *(["unet"] if s.also_train_unet else [])]))


def homes(layout: Layout, s) -> dict[str, Home]:
    """Each trained network's :class:`Home`: auto trains every candidate beside (the winner is copied to
    the run's place afterwards, :func:`promote`); else the run's model at the run's place."""
    archs = trained_networks(s)
    if s.model == "auto":
        return {a: side_home(layout, a) for a in archs}
    return {a: run_home(layout, a) if i == 0 else side_home(layout, a) for i, a in enumerate(archs)}


def pick_best(val_dice: dict[str, float]) -> tuple[str, str]:
    """(the network with the highest validation Dice, why); NaN counts as lowest, ties keep the order."""
    score = {a: (v if v is not None and not math.isnan(v) else -math.inf) for a, v in val_dice.items()}
    best = max(score, key=lambda a: score[a])  # max keeps the first of equal scores
    shown = ", ".join(f"{a} {v:.4f}" if v is not None and not math.isnan(v) else f"{a} n/a"
                      for a, v in val_dice.items())
    return best, f"highest validation Dice ({shown})"


def promote(home: Home, layout: Layout) -> Home:
    """Copy the chosen network's files (model, metrics, tables, curves, overlays; masks into ``masks/``)
    to the run's place; its fold folders stay beside (``model.pt`` already holds every fold)."""
    target = run_home(layout, home.arch)
    target.dir.mkdir(parents=True, exist_ok=True)
    for entry in sorted(home.dir.iterdir()):
        if entry.name == MASKS or entry.name.startswith(FOLD_DIR.format("")):
            continue
        dst = target.dir / entry.name
        if entry.is_dir():
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(entry, dst)
        elif entry.is_file():
            shutil.copy2(entry, dst)
    if home.masks.is_dir():
        shutil.rmtree(target.masks, ignore_errors=True)
        shutil.copytree(home.masks, target.masks)
    return target


__all__ = ["Home", "run_home", "side_home", "trained_networks", "homes", "pick_best", "promote"]
