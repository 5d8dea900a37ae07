"""Test-split evaluation: predict each test patient, map the mask back to the original grid,
write it as NIfTI, score it (:mod:`.metrics`) and draw overlays.

The network reads the run's preprocessed slices (the same arrays training used); its
probabilities (after component selection when training chose it) are restored onto the
patient's ORIGINAL image grid and thresholded there (:func:`cervirad.preprocess.restore_mask`),
and the 3D metrics compare the mask with the original reference mask on that grid (physical
spacing for the distances). MAE uses the probability map on the network's slice grid. A missed
lesion's HD/HD95 is the physical diagonal of that reference image (:mod:`.metrics`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..dicom.export import export_case, is_series
from ..io import Cohort, read_image, read_mask, to_array, write_image, write_table
from ..jsonutil import jsonable
from ..preprocess import load_meta, load_patient_slices
from ..files import write_json
from ..layout import METRICS, PER_PATIENT, case_file
from .infer import LoadedModel, predict_slices, restore_nonempty
from .metrics import image_diagonal_mm, overlap_metrics, patient_metrics, summarise


def evaluate_patients(model: LoadedModel, run_path: Path, cohort: Cohort, ids: list[str], masks_dir: Path,
                      batch_size: int = 8, n_overlays: int = 4,
                      mask_label: int | None = None,
                      export: tuple[str, ...] = ()) -> tuple[pd.DataFrame, list[dict]]:
    """Per-patient metrics table and up to ``n_overlays`` overlay slices; writes ``<masks_dir>/<pid>.nii.gz``
    (and, for a patient whose image is a DICOM series, the DICOM formats in ``export``: segmentation.export)."""
    import logging

    from ..progress import progress  # a bar on a terminal, else one log line per 10 % of the patients

    rows, overlay_pool = [], []
    post = model.postprocessing
    thr = post.threshold
    seq0 = model.sequences[0]
    _warm_up(model, run_path, ids[0], batch_size)
    for pid in progress(ids, len(ids), "segment test", "patient", logging.getLogger(__name__)):
        images, truth_sq = load_patient_slices(run_path, pid)
        raw, seconds = predict_slices(model, images, batch_size)
        probs, fallback = post.apply(raw)
        pred_sq = (probs > thr).astype(np.uint8)
        patient = cohort.patient(pid)
        if patient.mask is None:
            raise InputError(f"Test patient '{pid}' has no reference mask in the manifest; the test split is scored "
                             "against manual masks — add the mask or use `cervirad segment --model --input` instead.")
        reference = read_image(patient.images[seq0], pid, seq0)
        pred_img = restore_nonempty(probs, load_meta(run_path, pid), reference, thr, post.lesions == "one")
        write_image(pred_img, case_file(masks_dir, pid, ".nii.gz"))
        if export and is_series(patient.images[seq0]):
            export_case(pred_img, patient.images[seq0], masks_dir, pid, export)
        m, truth, pred = score_patient(pred_img, reference, patient.mask, pid, mask_label, probs, truth_sq)
        m["infer_ms_per_slice"] = 1000.0 * seconds / max(1, len(probs))
        if post.component_selection or post.lesions == "one":  # what post-processing changed, per patient
            m["dice_unprocessed"] = overlap_metrics(
                to_array(restore_nonempty(raw, load_meta(run_path, pid), reference, thr, False), np.uint8) > 0,
                truth)["dice"]
        rows.append({"patient_id": pid, "n_slices": len(probs), "lesion_voxels": int(truth.sum()),
                     "lesion_fallback": bool(fallback), "predicted_voxels": int(pred.sum()), **m})
        if truth_sq is not None and truth_sq.any():
            k = int(np.argmax(truth_sq.reshape(len(truth_sq), -1).sum(1)))
            overlay_pool.append({"patient_id": pid, "slice": k, "image": np.asarray(images[k, 0], np.float32),
                                 "truth": np.asarray(truth_sq[k]), "pred": pred_sq[k], "dice": m["dice"]})
    return pd.DataFrame(rows), _pick_overlays(overlay_pool, n_overlays)


def score_patient(pred_img, reference, mask: Path, pid: str, mask_label: int | None = None, probs: np.ndarray | None = None,
                  truth_sq: np.ndarray | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """One patient's scores (:func:`.metrics.patient_metrics`): the predicted mask image ``pred_img`` against the
    reference ``mask`` on the grid of the patient's image ``reference`` (physical spacing; a missed lesion's HD is
    that image's diagonal). ``probs``/``truth_sq``: the probabilities and reference on the network's slice grid
    (MAE). Returns (metrics, reference mask, predicted mask) as boolean (z, y, x) arrays. The test split
    (:func:`evaluate_patients`) and an external cohort (:func:`cervirad.external.segment_stage`) are scored by it."""
    truth = to_array(read_mask(mask, pid, mask_label), np.uint8) > 0
    pred = to_array(pred_img, np.uint8) > 0
    spacing_zyx = tuple(float(s) for s in reference.GetSpacing()[::-1])
    m = patient_metrics(pred, truth, spacing_zyx, probs, truth_sq,
                        diagonal_mm=image_diagonal_mm(reference.GetSize(), reference.GetSpacing()))
    return m, truth, pred


def _warm_up(model: LoadedModel, run_path: Path, pid: str, batch_size: int) -> None:
    """One untimed batch so the first patient's timing excludes one-off allocation costs."""
    images, _ = load_patient_slices(run_path, pid)
    predict_slices(model, np.asarray(images[:batch_size]), batch_size)


def _pick_overlays(pool: list[dict], n: int) -> list[dict]:
    """``n`` patients spread over the Dice range (worst, best and in between)."""
    if n <= 0 or not pool:
        return []
    pool = sorted(pool, key=lambda d: d["dice"])
    picks = np.unique(np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(int))
    return [pool[i] for i in picks]


def save_overlays(overlays: list[dict], out_dir: Path, title: str) -> list[Path]:
    """One PNG per slice: the image with the reference (green) and predicted (red) contours."""
    from ..plotting import pyplot, save_figure

    plt = pyplot()

    paths = []
    for o in overlays:
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(o["image"], cmap="gray")
        for mask, color, label in ((o["truth"], "lime", "reference"), (o["pred"], "red", "prediction")):
            if mask.any():
                ax.contour(mask.astype(float), levels=[0.5], colors=color, linewidths=1.2)
            ax.plot([], [], color=color, label=label)
        ax.legend(loc="lower right", fontsize=7)
        ax.set_title(f"{title}: {o['patient_id']} slice {o['slice']} (Dice {o['dice']:.2f})", fontsize=8)
        ax.axis("off")
        paths.append(save_figure(fig, out_dir / f"{o['patient_id']}_slice{o['slice']:03d}.png"))
    return paths


def write_evaluation(per_patient: pd.DataFrame, out_dir: Path, n_boot: int, seed: int, extra: dict) -> dict:
    """``per_patient.csv`` and the flat ``metrics.json`` (bootstrap CIs over patients)."""
    write_table(per_patient, out_dir / PER_PATIENT)
    summary = {**summarise(per_patient, n_boot, seed), **extra}
    summary = jsonable(summary)  # NaN -> None, as metrics.json holds it
    write_json(out_dir / METRICS, summary)
    return summary
