"""The plan's target spacing (nnU-Net's rule), from the cohort fingerprint.

Kept apart from :mod:`cervirad.segmentation.plan` (which writes ``plan.yaml``) because the
preprocess stage resamples to this spacing and must not import the segmentation package: with
``segmentation.plan`` on, preprocess calls :func:`planned_spacing` on ``fingerprint.json`` and the
plan records the same value. The rule is in :func:`target_spacing`; see the plan module for all.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .config.schema import Config
from .errors import InputError

ANISOTROPY = 3.0  # nnU-Net's anisotropy threshold
# in-plane column, in-plane row, thickness as the (x, y, z) axes of the canonical grid, per slice axis
_PLANE = {"axial": (0, 1, 2), "coronal": (0, 2, 1), "sagittal": (1, 2, 0)}


def default_of(key: str) -> Any:
    """The default value of a dotted config key."""
    node: Any = Config()
    for part in key.split("."):
        node = getattr(node, part)
    return node


def cohort_geometry(fp: dict, sequence: str, slice_axis: str) -> tuple[np.ndarray, np.ndarray]:
    """Per patient (spacing, size) of ``sequence`` as (column, row, thickness) of the slices cut along
    ``slice_axis``: each image axis goes to the patient axis its direction points along (as the
    canonical LPS reordering of preprocess does). Without per-patient facts: the cohort medians."""
    rows = [p[sequence] for p in fp.get("patients", []) if isinstance(p.get(sequence), dict)]
    if not rows:
        s = fp.get("sequences", {}).get(sequence)
        if not s:
            raise InputError(f"The fingerprint has no facts for sequence '{sequence}'; rerun `cervirad validate` with "
                             "this config (segmentation.input_sequences must be in data.sequences).")
        rows = [{"spacing": s["spacing_median"], "size": s["size_median"]}]
    spacings, sizes = [], []
    for r in rows:
        sp, sz = np.asarray(r["spacing"], float), np.asarray(r["size"], float)
        if "direction" in r:
            d = np.abs(np.asarray(r["direction"], float).reshape(3, 3))
            axis_of = np.argmax(d, axis=0)  # image axis i points along patient axis axis_of[i]
            if sorted(axis_of) == [0, 1, 2]:
                order = np.argsort(axis_of)
                sp, sz = sp[order], sz[order]
        plane = list(_PLANE[slice_axis])
        spacings.append(sp[plane])
        sizes.append(sz[plane])
    return np.array(spacings), np.array(sizes)


def target_spacing(spacings: np.ndarray, sizes: np.ndarray) -> tuple[list[float], str]:
    """nnU-Net's target spacing (module docstring) of per-patient spacings/sizes (n, 3); and why."""
    target = np.percentile(spacings, 50, axis=0)
    size = np.percentile(sizes, 50, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(3) if i != worst]
    aniso_spacing = target[worst] > ANISOTROPY * max(target[others])
    aniso_voxels = size[worst] * ANISOTROPY < min(size[others])
    why = "median spacing"
    if aniso_spacing and aniso_voxels:
        low = float(np.percentile(spacings[:, worst], 10))
        low = max(low, float(max(target[others])) + 1e-5) if low < max(target[others]) else low
        if low != target[worst]:
            why = (f"median spacing; anisotropic (axis {'column row thickness'.split()[worst]} "
                   f"{target[worst]:g} mm > {ANISOTROPY:g} x {max(target[others]):g} mm): its 10th percentile")
        target[worst] = low
    return [round(float(v), 4) for v in target], why


def development_fingerprint(fp: dict, ids) -> dict:
    """``fp`` with its per-patient facts restricted to ``ids`` - the development patients (train + val of the
    split; the test patients never shape the plan, issue 23) - and the cohort counts kept (the split sizes
    still follow from them). Unchanged when ``ids`` is empty or matches no patient."""
    ids = {str(i) for i in (ids or ())}
    keep = [p for p in fp.get("patients", []) if str(p.get("id")) in ids]
    if not keep:
        return fp
    return {**fp, "patients": keep, "planned_from": f"{len(keep)} development patients (train + val)"}


def planned_spacing(cfg: Config, fp: dict | None, development_ids=None) -> tuple[tuple[float, float, float], str]:
    """(spacing preprocess resamples to, why): the plan's target spacing when ``segmentation.plan`` is on
    and ``preprocess.spacing`` is left at its default (and not in ``plan_keep``), else the configured one.
    ``development_ids``: the patients whose geometry counts (train + val), else all."""
    if fp is not None and development_ids:
        fp = development_fingerprint(fp, development_ids)
    if not cfg.segmentation.plan or fp is None:
        return cfg.preprocess.spacing, "preprocess.spacing (no plan)"
    if (tuple(cfg.preprocess.spacing) != tuple(default_of("preprocess.spacing"))
            or "preprocess.spacing" in cfg.segmentation.plan_keep):
        return cfg.preprocess.spacing, "preprocess.spacing set in the config"
    spacings, sizes = cohort_geometry(fp, cfg.segmentation.input_sequences[0], cfg.preprocess.slice_axis)
    target, why = target_spacing(spacings, sizes)
    return (float(target[0]), float(target[1]), float(target[2])), why
