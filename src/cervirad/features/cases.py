"""Per-case extraction jobs: checks, the worker function, the cache, and the parallel runner.

A job is one (patient, sequence, image, mask) tuple. :func:`extract_case` runs in a worker
process and never raises: a failing case comes back as ``{"error": message}`` so the others
finish and the stage lists it in ``errors.csv``.

Cache: ``<run>/cache/features/<key>.json`` with ``key`` = hash of the image file, the mask
file, the PyRadiomics parameters, the cervirad settings that change values (sub-bands,
the families' settings, tolerance) and the PyRadiomics version. It lives outside the stage's staged
output so it survives reruns; entries are written atomically as results arrive, so a crash
keeps every finished case.

Parallelism (:func:`extract_jobs`): with several workers a case is cut into PARTS, one per
feature computation of PyRadiomics' order — part 0 = shape + feature families + diagnostics, then one
per image type (LoG: one per sigma; the wavelet: one for all kept sub-bands, which share one
transform) — so one very large lesion no longer holds a worker alone at the end. Parts run
largest case first (part 0, the superlinear shape features, first within a case) on a joblib
``loky`` process pool, or, with ``execution.backend: dask``, on a dask.distributed cluster
(``scheduler_address``; a local cluster of ``n_jobs`` processes when it is empty). A worker keeps
the last two cases' PyRadiomics-preprocessed images, so the parts of one case it runs load and
resample it once. The parts of a case are merged in PyRadiomics' order into the one result dict
:func:`extract_case` gives (same keys, same order, the same values to the last bit: each part
runs the same computation on the same preprocessed image); ``seconds`` is then the work summed
over the parts. One worker runs whole cases.
"""
from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from ..files import hash_obj, read_json
from ..parallel import dask_client
from .families import cache_fields, compute_families
from ..files import file_hash, write_json

CODE_VERSION = 1  # bump when extraction code changes values, to invalidate caches


@dataclass(frozen=True)
class CaseJob:
    patient_id: str
    sequence: str
    image: str
    mask: str
    params: dict
    subbands: Optional[tuple[str, ...]]
    family_settings: dict  # the features config values the families of .families read, by key
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
        "subbands": job.subbands, **cache_fields(job.family_settings), "tolerance": job.tolerance,
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
    """Radiomics + family (:mod:`.families`) features of one job; ``{"error": ...}`` instead of raising."""
    import SimpleITK as sitk

    from .radiomics_ext import extract_radiomics

    t0 = time.perf_counter()
    out: dict[str, Any] = {"patient_id": job.patient_id, "sequence": job.sequence, "key": job.key}
    if job.threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(job.threads)
    try:
        image, mask = _load_case(job)
        label = int(job.params.get("setting", {}).get("label", 1))
        roi = _check_mask(job, sitk.GetArrayViewFromImage(mask), label)
        families = compute_families(sitk.GetArrayViewFromImage(image), roi, job.family_settings)
        feats, diag = extract_radiomics(image, mask, job.params, job.subbands)
    except Exception as e:  # one failing case must not stop the others
        out["error"] = _error_message(job, e)
        return out
    out.update(features={**feats, **families}, diagnostics=diag, mask_voxels=int(roi.sum()),
               seconds=round(time.perf_counter() - t0, 3))
    return out


def _error_message(job: CaseJob, e: Exception) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    if f"'{job.patient_id}'" not in msg:
        msg = f"Feature extraction failed for case '{job.patient_id}' ({job.sequence}): {msg[:300]}"
    return msg


# --------------------------------------------------------------------------- parts of a case
@dataclass(frozen=True)
class CasePart:
    """One piece of a case's extraction: ``unit`` None = shape + families + diagnostics (part 0),
    else ``(image type, custom arguments)`` of :func:`~.radiomics_ext.image_units`."""

    job: CaseJob
    case: int  # position of the job in the submitted list (the merge key)
    index: int
    n_parts: int
    unit: Optional[tuple[str, dict]] = None


def case_parts(job: CaseJob, case: int) -> list[CasePart]:
    """Part 0 (shape, families, diagnostics) and one part per image unit, in PyRadiomics' order."""
    from .radiomics_ext import image_units

    units = image_units(job.params)
    return [CasePart(job, case, i, len(units) + 1, u) for i, u in enumerate([None, *units])]


_PREPARED: "OrderedDict[tuple, Any]" = OrderedDict()  # this worker's last preprocessed cases
_PREPARED_KEEP = 2


def _prepared(job: CaseJob, loaded: tuple[Any, Any] | None = None):
    """The case's PyRadiomics-preprocessed image and masks (:func:`~.radiomics_ext.prepare`), kept
    per worker process for the case's next parts; the key includes the files' size and mtime.
    ``loaded``: the case's (image, mask) from :func:`_load_case` when the caller has read them."""
    from .radiomics_ext import prepare

    stamp = tuple((os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in (job.image, job.mask))
    key = (job.image, job.mask, stamp, job.key, json.dumps(job.params, sort_keys=True, default=str),
           job.tolerance, job.same_grid_required)
    if key in _PREPARED:
        _PREPARED.move_to_end(key)
        return _PREPARED[key]
    image, mask = loaded if loaded is not None else _load_case(job)
    prep = prepare(image, mask, job.params)
    _PREPARED[key] = prep
    while len(_PREPARED) > _PREPARED_KEEP:
        _PREPARED.popitem(last=False)
    return prep


def extract_part(part: CasePart) -> dict:
    """Features of one part; ``{"error": ...}`` instead of raising (as :func:`extract_case`)."""
    import SimpleITK as sitk

    from .radiomics_ext import compute_shape, compute_unit

    t0 = time.perf_counter()
    job = part.job
    out: dict[str, Any] = {"patient_id": job.patient_id, "sequence": job.sequence, "key": job.key,
                           "case": part.case, "part": part.index, "n_parts": part.n_parts}
    if job.threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(job.threads)
    try:
        if part.unit is None:
            image, mask = _load_case(job)
            label = int(job.params.get("setting", {}).get("label", 1))
            roi = _check_mask(job, sitk.GetArrayViewFromImage(mask), label)
            families = compute_families(sitk.GetArrayViewFromImage(image), roi, job.family_settings)
            prep = _prepared(job, (image, mask))
            out.update(features=compute_shape(prep), families=families, diagnostics=prep.diagnostics,
                       mask_voxels=int(roi.sum()))
        else:
            out["features"] = compute_unit(_prepared(job), *part.unit, job.subbands)
    except Exception as e:  # one failing case must not stop the others
        out["error"] = _error_message(job, e)
    out["seconds"] = time.perf_counter() - t0
    return out


def merge_parts(parts: list[dict]) -> dict:
    """The parts of one case -> the result dict of :func:`extract_case` (features in PyRadiomics'
    order, the families of :mod:`.families` last); the first failing part's error when any failed."""
    parts = sorted(parts, key=lambda r: r["part"])
    head = parts[0]
    out: dict[str, Any] = {k: head[k] for k in ("patient_id", "sequence", "key")}
    failed = next((r for r in parts if "error" in r), None)
    if failed is not None:
        out["error"] = failed["error"]
        return out
    features: dict[str, float] = {}
    for r in parts:
        features.update(r["features"])
    out.update(features={**features, **head["families"]}, diagnostics=head["diagnostics"],
               mask_voxels=head["mask_voxels"], seconds=round(sum(r["seconds"] for r in parts), 3))
    if any("timing" in r for r in parts):  # a benchmark's worker timings, passed through
        out["timings"] = [r["timing"] for r in parts if "timing" in r]
    return out


def extract_jobs(jobs: list[CaseJob], n_jobs: int, backend: str = "loky", scheduler_address: str | None = None,
                 part_fn: Callable[[CasePart], dict] = extract_part) -> Iterator[dict]:
    """:func:`extract_case` of every job, yielded as each case completes; with several workers (or
    Dask) computed as parts (:func:`case_parts`) submitted case by case in the given order (largest
    lesion first) and merged per case. ``part_fn`` is for benchmarks wrapping :func:`extract_part`."""
    if n_jobs <= 1 and backend != "dask":
        yield from run_jobs(jobs, n_jobs, backend, scheduler_address)
        return
    parts = [p for i, job in enumerate(jobs) for p in case_parts(job, i)]
    done: dict[int, list[dict]] = {}
    for res in run_jobs(parts, n_jobs, backend, scheduler_address, fn=part_fn):
        got = done.setdefault(res["case"], [])
        got.append(res)
        if len(got) == res["n_parts"]:
            yield merge_parts(done.pop(res["case"]))


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
            hit = read_json(p)
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
