"""The training plan: nnU-Net's self-configuration, from the cohort fingerprint to ``plan.yaml``.

Stage ``plan`` (:func:`plan_stage`, ``cervirad plan``) reads ``fingerprint.json`` (validate) and
writes ``plan.yaml``; ``train-seg`` reads it (:func:`planned_config`) and the preprocess stage
takes its target spacing from the same rule (:func:`with_planned_spacing`). Each decision is
recorded with its value, its source and why. The rules (Isensee et al., Nature Methods 2021,
"nnU-Net", supplementary note 2, and nnU-Net v2's ``ExperimentPlanner``):

- **Target spacing** (``preprocess.spacing``, in-plane column, in-plane row, thickness): the
  median spacing of the cohort, per axis. Anisotropic data (nnU-Net's rule): when the coarsest
  axis's median spacing is more than 3 times the finest other one AND it has more than 3 times
  fewer voxels, that axis takes the 10th percentile of its spacings instead (never finer than the
  other axes), so that thin-slice scans are not blurred to the thick ones.
- **Patch** (``segmentation.train_crop``): the median in-plane extent of the cohort at the
  target spacing (the larger of rows and columns), rounded up to a multiple of the network
  stride (``config.STRIDE``) and kept in [``MIN_PATCH``, ``MAX_PATCH``] (256 is the paper's slice
  side: CRFE's position attention grows with the fourth power of the side).
- **Which patients**: the geometry rules (spacing, patch, cohort pixels) read the development
  patients only (train + val of ``splits.json``, which run-all's preprocess writes first; without
  it, all patients, recorded as ``cohort.planned_from``): the test patients never shape the plan.
- **Batch size** (``segmentation.batch_size``): what fits in ``MEMORY_FRACTION`` of a FIXED
  memory budget ``MEMORY_BUDGET`` (16 GiB GPU, 8 GiB CPU - a documented cap, not the free memory
  of the moment, so two runs on one machine plan the same batch) at ``bytes_per_sample(patch)``: ``BYTES_PER_PIXEL`` (the
  network's activations, 210 floats per input pixel for CRFE and the U-Net at any side,
  measured with forward hooks, times 2 for their gradients, 4 bytes each) plus the position
  attention's N x N matrix (N = (side/8)², 3 copies kept for backward). Then nnU-Net's cap: a
  batch covers at most 5 % of the cohort's pixels; at least 2, at most ``MAX_BATCH`` (GPU) or
  ``MAX_BATCH_CPU`` (a CPU's throughput does not grow with the batch, so under a time budget
  smaller batches give more optimiser steps).
- **Epochs** (``segmentation.epochs``, with ``segmentation.budget_minutes``): what the time budget
  affords at the speed a probe measures (:mod:`.budget`); without a budget nothing is probed and
  the config's epochs stand.
- **Recipe**: nnU-Net's optimisation (SGD, Nesterov momentum 0.99, lr 1e-2, poly decay) —
  except when a budget affords fewer than ``SGD_MIN_STEPS`` optimiser steps: then Adam (lr 1e-3)
  with cosine annealing, which moves in a few hundred steps where SGD with momentum 0.99 does not
  (measured on the real STS cohort, ``scripts/bench/sts_cv.py``); deep supervision on, foreground oversampling 0.33 and its augmentations (elastic 0.2, blur 0.2,
  brightness 0.15, contrast 0.15, low resolution 0.25, gamma 0.3).
- **Normalisation**: z-score per image for every MRI sequence (nnU-Net's rule for non-CT data);
  cervirad's preprocess does exactly that (``preprocess.normalize``).
- **Small cohorts**: with fewer than ``SMALL_COHORT`` training patients (train + validation of the
  split) the plan asks for ``FOLDS``-fold cross-validation for model selection instead of a tiny
  validation set (``segmentation.folds``, which train-seg's fold loop reads; logged with the reason).

A setting that the config sets to anything but its default, or lists in
``segmentation.plan_keep``, wins over the plan (recorded as ``source: config``); ``segmentation.plan: false`` (paper.yaml) keeps the whole fixed recipe.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..config.checks import STRIDE
from ..config.loading import from_dict
from ..config.schema import Config
from ..files import read_json
from ..target_spacing import cohort_geometry, default_of, target_spacing
from .budget import architectures, budget_split, plan_schedule, probe_seconds_per_sample, scoring_minutes

log = logging.getLogger(__name__)

PLAN_VERSION = 1
MIN_PATCH, MAX_PATCH = 64, 256
BYTES_PER_PIXEL = 210 * 4 * 2
MEMORY_FRACTION = {"cpu": 0.25, "cuda": 0.8}
# the memory the batch rule plans for: a fixed, documented budget (a 16 GiB GPU, 8 GiB of RAM), never the free
# memory of the moment (which made plan.yaml differ between two runs on one machine, issue 23)
MEMORY_BUDGET = {"cpu": 8 << 30, "cuda": 16 << 30}
MAX_BATCH, MAX_BATCH_CPU, MIN_BATCH = 32, 8, 2
DATASET_SHARE = 0.05  # nnU-Net: a batch covers at most 5 % of the cohort's voxels
SMALL_COHORT, FOLDS = 40, 5
SGD_MIN_STEPS = 1000  # fewer planned optimiser steps than this: Adam instead of SGD (nnU-Net runs 250 000)
CONTEXT_MM = 8.0  # 2.5-D context: neighbours within this distance on each side, at most MAX_CONTEXT
MAX_CONTEXT = 2
NNUNET_RECIPE: dict[str, Any] = {
    "segmentation.optimizer": "sgd", "segmentation.lr": 1e-2, "segmentation.scheduler": "poly",
    "segmentation.deep_supervision": True, "segmentation.foreground_oversampling": 0.33,
    "segmentation.augmentation.elastic_p": 0.2, "segmentation.augmentation.blur_p": 0.2,
    "segmentation.augmentation.brightness_p": 0.15, "segmentation.augmentation.contrast_p": 0.15,
    "segmentation.augmentation.lowres_p": 0.25, "segmentation.augmentation.gamma_p": 0.3,
}


def patch_side(spacings: np.ndarray, sizes: np.ndarray, target: list[float]) -> tuple[int, str]:
    """Square training patch from the median in-plane extent at ``target`` (module docstring); and why."""
    extent_px = np.median(spacings[:, :2] * sizes[:, :2], axis=0) / np.asarray(target[:2])
    side = int(math.ceil(float(max(extent_px)) / STRIDE) * STRIDE)
    side = int(min(MAX_PATCH, max(MIN_PATCH, side)))
    return side, (f"median in-plane shape {int(round(extent_px[1]))} x {int(round(extent_px[0]))} px at the target "
                  f"spacing, rounded up to a multiple of {STRIDE}, within [{MIN_PATCH}, {MAX_PATCH}]")


def plan_context(thickness_mm: float) -> tuple[int, str]:
    """Context slices per side (2.5-D input): as many neighbours as lie within ``CONTEXT_MM`` on each
    side, at most ``MAX_CONTEXT``; thick slices (> CONTEXT_MM) get none."""
    k = int(min(MAX_CONTEXT, math.floor(CONTEXT_MM / max(float(thickness_mm), 1e-6))))
    return k, (f"{k} neighbour(s) per side lie within {CONTEXT_MM:g} mm at {float(thickness_mm):.2f} mm slices "
               f"(at most {MAX_CONTEXT})")


def world_size() -> int:
    """Processes that train together (torchrun's WORLD_SIZE; 1 for a single process)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


# --------------------------------------------------------------------------- resources
def bytes_per_sample(patch: int) -> int:
    """Training memory of one patch (module docstring)."""
    n = (patch // 8) ** 2
    return int(patch * patch * BYTES_PER_PIXEL + 3 * n * n * 4)


def available_memory(device: str) -> tuple[int, str]:
    """(bytes available, where the number comes from) on ``device`` ('cpu' or 'cuda')."""
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return int(free), "torch.cuda.mem_get_info (free GPU memory)"
    try:
        import psutil

        return int(psutil.virtual_memory().available), "psutil.virtual_memory().available"
    except ImportError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")), "os.sysconf (available pages)"
    except (ValueError, OSError, AttributeError):
        return 4 << 30, "unknown (assumed 4 GiB)"


def plan_batch(patch: int, device: str, memory: int, cohort_pixels: float) -> tuple[int, str]:
    """Batch size from memory and nnU-Net's 5 % rule (module docstring); and why."""
    fits = int(MEMORY_FRACTION[device] * memory // bytes_per_sample(patch))
    share = int(round(DATASET_SHARE * cohort_pixels / (patch * patch)))
    top = MAX_BATCH if device == "cuda" else MAX_BATCH_CPU
    b = max(MIN_BATCH, min(fits, share, top))
    return b, (f"{fits} patches fit {MEMORY_FRACTION[device]:.0%} of {memory / 2**30:.1f} GiB ({device}, "
               f"{bytes_per_sample(patch) / 2**20:.1f} MiB each), 5 % of the cohort is {share}, at most {top}")


# --------------------------------------------------------------------------- the plan
def _current(cfg: Config, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


PLANNED_KEYS = ("preprocess.spacing", "segmentation.train_crop", "segmentation.context_slices", *NNUNET_RECIPE,
                "segmentation.batch_size",
                "segmentation.epochs", "segmentation.max_train_slices_per_epoch", "segmentation.max_val_slices",
                "segmentation.folds")


def check_settings(cfg: Config) -> None:
    """Before any stage runs: every key of ``segmentation.plan_keep`` is one the plan decides."""
    from ..errors import ConfigError

    bad = [k for k in cfg.segmentation.plan_keep if k not in PLANNED_KEYS]
    if bad:
        raise ConfigError(f"Config key 'segmentation.plan_keep': {bad[0]!r} is not a setting the plan decides; use "
                          f"some of {', '.join(PLANNED_KEYS)}.")


class _Decisions:
    """Planned values in order; a key the config set to other than its default, or listed in
    ``segmentation.plan_keep``, keeps the config's."""

    def __init__(self, cfg: Config):
        self.cfg, self.items = cfg, {}

    def set(self, key: str, value: Any, why: str) -> Any:
        cur = _current(self.cfg, key)
        if key in self.cfg.segmentation.plan_keep:
            self.items[key] = {"value": _plain(cur), "source": "config", "why": f"in segmentation.plan_keep (plan: "
                                                                                f"{why}; {_plain(value)})"}
            return cur
        if _plain(cur) != _plain(default_of(key)):
            self.items[key] = {"value": _plain(cur), "source": "config", "why": f"set in the config (plan: {why}; "
                                                                                f"{_plain(value)})"}
            return cur
        self.items[key] = {"value": _plain(value), "source": "plan", "why": why}
        return value

    def config(self) -> Config:
        return apply_decisions(self.cfg, self.items)


def _plain(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def make_plan(fp: dict, cfg: Config, device: str = "cpu", memory: int | None = None,
              s_per_sample: float | None = None, arch: str | None = None) -> dict:
    """The plan (a plain dict, written as plan.yaml) of ``cfg`` for the cohort of fingerprint ``fp``.
    ``memory`` (bytes) and ``s_per_sample`` (seconds per training sample at the planned patch, the
    probe) are the machine's; :func:`plan_stage` measures them."""
    s = cfg.segmentation
    seq = s.input_sequences[0]
    spacings, sizes = cohort_geometry(fp, seq, cfg.preprocess.slice_axis)
    d = _Decisions(cfg)
    target = d.set("preprocess.spacing", *target_spacing(spacings, sizes))
    patch = d.set("segmentation.train_crop", *patch_side(spacings, sizes, list(target)))
    patch = patch or cfg.preprocess.slice_size
    d.set("segmentation.context_slices", *plan_context(float(target[2])))
    for key, value in NNUNET_RECIPE.items():
        if key == "segmentation.lr" and d.items["segmentation.optimizer"]["value"] != "sgd":
            d.items[key] = {"value": s.lr, "source": "config", "why": "the config's optimizer keeps its lr"}
            continue
        d.set(key, value, "nnU-Net's recipe")
    # slices and pixels of the cohort at the target spacing
    extent = spacings * sizes
    px = extent / np.asarray(target)
    n_slices = np.maximum(1, np.round(px[:, 2])).astype(int)
    cohort_pixels = float(np.sum(px[:, 0] * px[:, 1] * n_slices))
    mem = memory if memory is not None else MEMORY_BUDGET[device]  # fixed: plan.yaml must not follow free RAM
    batch = d.set("segmentation.batch_size", *plan_batch(patch, device, mem, cohort_pixels))
    n = int(fp.get("n_with_mask") or fp.get("n_patients") or len(spacings))
    split = cfg.preprocess.split
    n_dev = int(round(n * (split.train + split.val)))
    slices_per_patient = float(np.median(n_slices))
    folds, folds_why = plan_folds(n_dev)
    folds = d.set("segmentation.folds", folds, folds_why)
    # a fold model trains on (K-1)/K of the development patients, a single model on the train part
    n_train = n_dev * (folds - 1) / folds if folds > 1 else n * split.train
    n_val = n_dev / folds if folds > 1 else max(1, n * split.val)
    scoring = None
    if s_per_sample:
        n_val_all = n_dev if folds > 1 else n_val  # post-processing is chosen on every held-out patient
        scoring = scoring_minutes(d.config(), folds, s_per_sample, list(zip(px[:, 1], px[:, 0])), patch,
                                  n_val_all, n * split.test, slices_per_patient)
    budget = budget_split(d.config(), folds, scoring)
    if budget and s_per_sample and budget["model_minutes"] > 0:
        ratio = float(np.median(px[:, 0] * px[:, 1])) / (patch * patch)
        sched = plan_schedule(budget["model_minutes"], s_per_sample, int(n_train * slices_per_patient),
                              int(n_val * slices_per_patient), ratio, batch * world_size(), s.epochs)
        for key, (value, why) in sched.items():
            if key == "segmentation.epochs" and key not in s.plan_keep:  # the config's epochs is the ceiling
                d.items[key] = {"value": value, "source": "plan", "why": why}
            else:
                d.set(key, value, why)
    _few_steps_optimizer(d, s)
    return {
        "version": PLAN_VERSION,
        "cohort": {"planned_from": fp.get("planned_from", "all patients of the fingerprint"), "patients": n,
                   "development_patients": n_dev, "sequence": seq,
                   "slice_axis": cfg.preprocess.slice_axis, "median_slices": slices_per_patient},
        "decisions": d.items,
        "normalization": {q: "zscore" for q in s.input_sequences},
        "folds": folds,
        "folds_reason": folds_why,
        "budget_split": budget,
        "resources": {"device": device, "memory_gib": round(mem / 2**30, 2),
                      "seconds_per_sample": None if s_per_sample is None else round(s_per_sample, 4),
                      "arch": arch or s.model},
    }


def _few_steps_optimizer(d: _Decisions, s) -> None:
    """When the schedule (the budget's, else the config's epochs and slices per epoch) affords fewer than
    ``SGD_MIN_STEPS`` optimiser steps, Adam (lr 1e-3) with cosine annealing replaces nnU-Net's SGD + poly
    (which the plan chose, not the config)."""
    v = {"segmentation.epochs": s.epochs, "segmentation.max_train_slices_per_epoch": s.max_train_slices_per_epoch,
         **{k: x["value"] for k, x in d.items.items()}}
    per_epoch = v.get("segmentation.max_train_slices_per_epoch")
    if d.items["segmentation.optimizer"]["source"] != "plan" or not per_epoch:
        return
    # optimiser steps of the GLOBAL batch: under torchrun every step consumes batch_size x WORLD_SIZE samples
    steps = v["segmentation.epochs"] * math.ceil(per_epoch / (v["segmentation.batch_size"] * world_size()))
    if steps >= SGD_MIN_STEPS:
        return
    why = (f"{steps} optimiser steps fit the budget (< {SGD_MIN_STEPS}): SGD with momentum 0.99 barely moves in so "
           "few steps (scripts/bench/sts_cv.py), Adam does")
    for key, value in (("segmentation.optimizer", "adam"), ("segmentation.lr", 1e-3),
                       ("segmentation.scheduler", "cosine")):
        if d.items[key]["source"] == "plan":
            d.items[key] = {"value": value, "source": "plan", "why": why}


def plan_folds(n_development: int) -> tuple[int, str]:
    """Cross-validation folds for model selection: ``FOLDS`` below ``SMALL_COHORT`` development patients."""
    if n_development < SMALL_COHORT:
        return FOLDS, (f"{n_development} training + validation patients (< {SMALL_COHORT}): {FOLDS}-fold "
                       "cross-validation for model selection instead of a small validation set")
    return 1, f"{n_development} training + validation patients (>= {SMALL_COHORT}): one validation split"


def apply_decisions(cfg: Config, decisions: dict) -> Config:
    """``cfg`` with every decision's value (dotted keys)."""
    data = cfg.to_dict()
    for key, dec in decisions.items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = dec["value"]
    return from_dict(data)


# --------------------------------------------------------------------------- reading it back
def read_plan(path: Path) -> dict | None:
    if not Path(path).is_file():
        return None
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def planned_config(cfg: Config, run) -> Config:
    """The config train-seg runs with: ``cfg`` with the run's ``plan.yaml`` applied (when
    ``segmentation.plan``). Without a plan.yaml, the fixed recipe of ``cfg`` at the spacing preprocess
    used (its summary)."""
    if not cfg.segmentation.plan:
        return cfg
    plan = read_plan(run.plan)
    if plan is None:
        summary = read_json(run.preprocess_summary)
        log.warning("train-seg: segmentation.plan is on but the run has no %s; training with the config's recipe "
                    "(run `cervirad plan` to derive one)", run.plan.name)
        return apply_decisions(cfg, {"preprocess.spacing": {"value": summary["spacing"]}})
    out = apply_decisions(cfg, plan["decisions"])
    planned = [k for k, d in plan["decisions"].items() if d["source"] == "plan"]
    log.info("train-seg: the run's %s sets %s", run.plan.name, ", ".join(planned) or "nothing (the config sets all)")
    if plan.get("folds", 1) > 1:
        log.info("train-seg: %d-fold cross-validation: %s", plan["folds"], plan.get("folds_reason", ""))
    return out


# --------------------------------------------------------------------------- the stage
def plan_stage(cfg: Config, inputs, st) -> dict:
    """The plan stage: ``plan.yaml`` from ``fingerprint.json`` (``inputs``: the stage's declared artifacts) and
    this machine (memory, a timing probe when ``segmentation.budget_minutes`` is set). With
    ``segmentation.plan: false`` the plan records the config's fixed recipe."""
    from .infer import resolve_device

    fp = read_json(inputs.require(inputs.fingerprint.relative_to(inputs.path), "run `cervirad validate` first"))
    if not cfg.segmentation.plan:
        plan = {"version": PLAN_VERSION, "enabled": False, "decisions": {},
                "why": "segmentation.plan is false: the config's fixed recipe (paper.yaml)", "folds": 1,
                "folds_reason": "segmentation.plan is false"}
    else:
        device = resolve_device(cfg.segmentation.device).type
        if inputs.splits.is_file():  # the training patients' geometry only: test patients never shape the plan
            from ..splits import load_splits
            from ..target_spacing import development_fingerprint

            sp = load_splits(inputs.path)
            fp = development_fingerprint(fp, sp["train"] + sp["val"])
        memory, source = None, f"fixed budget MEMORY_BUDGET[{device!r}] (plan.py), not this machine's free memory"
        first = make_plan(fp, cfg, device, memory)
        s_per = None
        if cfg.segmentation.budget_minutes:
            planned = apply_decisions(cfg, first["decisions"])
            patch = planned.segmentation.train_crop or planned.preprocess.slice_size
            in_ch = len(cfg.segmentation.input_sequences) * (2 * planned.segmentation.context_slices + 1)
            s_per = probe_seconds_per_sample(planned, architectures(cfg)[0], in_ch, patch, device)  # auto: the first
        plan = {"enabled": True, **make_plan(fp, cfg, device, memory, s_per)}
        plan["resources"]["memory_source"] = source
    for key, d in plan["decisions"].items():
        log.info("plan: %s = %s (%s: %s)", key, d["value"], d["source"], d["why"])
    log.info("plan: folds = %s (%s)", plan["folds"], plan["folds_reason"])
    if plan.get("budget_split"):
        log.info("plan: budget split: %s", plan["budget_split"]["why"])
    text = yaml.safe_dump(plan, sort_keys=False, default_flow_style=None, width=110)
    from ..files import write_text

    write_text(st.plan, "# cervirad training plan (segmentation/plan.py); written by `cervirad plan`\n" + text)
    st.info["plan"] = {k: d["value"] for k, d in plan["decisions"].items() if d["source"] == "plan"}
    st.info["folds"] = plan["folds"]
    return plan


__all__ = ["make_plan", "plan_stage", "planned_config", "patch_side", "plan_batch", "plan_folds", "bytes_per_sample",
           "available_memory", "apply_decisions", "read_plan"]
