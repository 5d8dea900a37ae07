"""Per-case extraction jobs: checks, the worker function, the cache, and the parallel runner.

A job is one (patient, sequence, image, mask) tuple. :func:`extract_case` runs in a worker
process and never raises: a failing case comes back as ``{"error": message}`` so the others
finish and the stage lists it in ``errors.csv``.

Cache: ``<run>/cache/features/<key>.json`` with ``key`` = hash of the image file, the mask
file, the PyRadiomics parameters, the cervirad settings that change values (sub-bands,
histogram bins, tolerance) and the PyRadiomics version. It lives outside the stage's staged
output so it survives reruns; entries are written atomically as results arrive, so a crash
keeps every finished case.

Parallelism: cases run largest mask first (the longest jobs start first, so the last
worker does not finish alone) on a joblib ``loky`` process pool, or, with
``execution.backend: dask``, on a dask.distributed cluster (``scheduler_address``; a local
cluster of ``n_jobs`` processes when it is empty).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from ..config import hash_obj
from ..parallel import dask_client
from ..rundir import file_hash, write_json

CODE_VERSION = 1  # bump when extraction code changes values, to invalidate caches


@dataclass(frozen=True)
class CaseJob:
    patient_id: str
    sequence: str
    image: str
    mask: str
    params: dict
    subbands: Optional[tuple[str, ...]]
    histogram_bins: int
    tolerance: float
    # False for a sequence acquired on another grid than the mask (resampled onto it)
    same_grid_required: bool = True
    threads: int = 0  # SimpleITK threads in the worker (0: SimpleITK's default)
    voxels: int = 0  # lesion size, for scheduling only
    key: str = ""


def case_key(job: CaseJob) -> str:
    """Cache key: file contents, parameters, value-changing settings, library versions."""
    from importlib import metadata

    try:
        radiomics_version = metadata.version("pyradiomics-bhklab")
    except metadata.PackageNotFoundError:
        radiomics_version = "unknown"
    return hash_obj({
        "patient": job.patient_id, "sequence": job.sequence,
        "image": file_hash(job.image), "mask": file_hash(job.mask), "params": job.params,
        "subbands": job.subbands, "bins": job.histogram_bins, "tolerance": job.tolerance,
        "same_grid": job.same_grid_required, "radiomics": radiomics_version, "code": CODE_VERSION,
    })


def label_voxels(mask_path: str | Path, label: int) -> int:
    """Number of voxels of ``label`` in a mask file (0 when unreadable: the worker reports it)."""
    import SimpleITK as sitk

    try:
        return int((sitk.GetArrayViewFromImage(sitk.ReadImage(str(mask_path))) == label).sum())
    except RuntimeError:
        return 0


# --------------------------------------------------------------------------- the worker
def _load_case(job: CaseJob) -> tuple[Any, Any]:
    """Image and mask on one grid; a one-line ValueError naming the case otherwise."""
    import SimpleITK as sitk

    from ..io import geometry_mismatch, geometry_mismatch_message, read_image

    image = read_image(job.image, job.patient_id, job.sequence)
    mask = read_image(job.mask, job.patient_id, "mask")
    mis = geometry_mismatch(image, mask, job.tolerance)
    if mis and job.same_grid_required:
        raise ValueError(geometry_mismatch_message(job.patient_id, job.sequence, mis))
    if mis:  # another sequence's grid: B-spline resample the image onto the mask grid
        image = sitk.Resample(image, mask, sitk.Transform(), sitk.sitkBSpline, 0.0, sitk.sitkFloat32)
    else:
        mask.CopyInformation(image)  # within tolerance: identical for PyRadiomics' strict check
    return image, mask


def _check_mask(job: CaseJob, mask_arr: np.ndarray, label: int) -> np.ndarray:
    roi = mask_arr == label
    n = int(roi.sum())
    if n == 0:
        found = ", ".join(str(v) for v in np.unique(mask_arr)[:6])
        raise ValueError(f"Mask of case '{job.patient_id}' has no voxel with label {label} (labels found: {found}); "
                         "check the mask file or the 'label' setting of the radiomics parameter file.")
    if n == 1:
        raise ValueError(f"Mask of case '{job.patient_id}' has a single voxel of label {label}; texture features need "
                         "a lesion of several voxels, correct the segmentation.")
    return roi


def extract_case(job: CaseJob) -> dict:
    """Radiomics + histogram features of one job; ``{"error": ...}`` instead of raising."""
    import SimpleITK as sitk

    from .histogram import lesion_histogram_features
    from .radiomics_ext import extract_radiomics

    t0 = time.perf_counter()
    out: dict[str, Any] = {"patient_id": job.patient_id, "sequence": job.sequence, "key": job.key}
    if job.threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(job.threads)
    try:
        image, mask = _load_case(job)
        label = int(job.params.get("setting", {}).get("label", 1))
        roi = _check_mask(job, sitk.GetArrayViewFromImage(mask), label)
        hist = lesion_histogram_features(sitk.GetArrayViewFromImage(image), roi, job.histogram_bins)
        feats, diag = extract_radiomics(image, mask, job.params, job.subbands)
    except Exception as e:  # one failing case must not stop the others
        msg = " ".join(str(e).split()) or type(e).__name__
        if f"'{job.patient_id}'" not in msg:
            msg = f"Feature extraction failed for case '{job.patient_id}' ({job.sequence}): {msg[:300]}"
        out["error"] = msg
        return out
    out.update(features={**feats, **hist}, diagnostics=diag, mask_voxels=int(roi.sum()),
               seconds=round(time.perf_counter() - t0, 3))
    return out


# --------------------------------------------------------------------------- cache
class CaseCache:
    """JSON results per case key under ``folder`` (written atomically)."""

    def __init__(self, folder: Path | None):
        self.folder = Path(folder) if folder else None

    def get(self, key: str) -> Optional[dict]:
        if self.folder is None:
            return None
        p = self.folder / f"{key}.json"
        if not p.is_file():
            return None
        try:
            hit = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # a damaged entry is recomputed
        if isinstance(hit, dict) and isinstance(hit.get("features"), dict):  # write_json wrote NaN as null
            hit["features"] = {k: float("nan") if v is None else v for k, v in hit["features"].items()}
        return hit

    def put(self, key: str, result: dict) -> None:
        if self.folder is not None and "error" not in result:
            write_json(self.folder / f"{key}.json", result)


# --------------------------------------------------------------------------- running
def run_jobs(jobs: list[CaseJob], n_jobs: int, backend: str = "loky", scheduler_address: str | None = None,
             fn: Callable[[CaseJob], dict] = extract_case) -> Iterator[dict]:
    """Yield ``fn(job)`` for every job, in completion order; ``jobs`` is submitted in the given order."""
    if not jobs:
        return
    if backend == "dask":
        yield from _run_dask(jobs, n_jobs, scheduler_address, fn)
    elif n_jobs <= 1 or len(jobs) == 1:
        for job in jobs:
            yield fn(job)
    else:
        from joblib import Parallel, delayed

        par = Parallel(n_jobs=min(n_jobs, len(jobs)), backend="loky", batch_size=1, return_as="generator_unordered")
        yield from par(delayed(fn)(j) for j in jobs)


def _run_dask(jobs: list[CaseJob], n_jobs: int, address: str | None, fn: Callable) -> Iterator[dict]:
    with dask_client(n_jobs, address) as client:
        from distributed import as_completed

        futures = [client.submit(fn, j, pure=False, priority=len(jobs) - i) for i, j in enumerate(jobs)]
        for fut in as_completed(futures):
            yield fut.result()
