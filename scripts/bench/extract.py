"""Benchmark: cervirad feature extraction vs a plain serial PyRadiomics loop (same cases, same settings).

Cases: the 18 real T1w MRI volumes with tumour masks in ../shared/data/ibsi_sts_mri, paper preset
(configs/radiomics/paper.yaml, wavelet LLL + HHH: 851 radiomics features per case).

- cervirad: the stage's job engine (:func:`cervirad.features.cases.run_jobs`, largest mask first,
  one process per core, no cache), which also computes the 9 histogram features.
- baseline: a serial loop of plain PyRadiomics calls: ``RadiomicsFeatureExtractor.execute`` for
  every image type except the wavelet, then the wavelet LLL and HHH sub-bands through PyRadiomics'
  own ``getWaveletImage`` + ``computeFeatures`` (plain PyRadiomics cannot skip sub-bands).

Prints both times, the ratio, peak memory, and checks that both give the same 851 values.
Usage: .venv/bin/python scripts/bench/extract.py [--cases N] [--jobs J]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("CERVIRAD_SHARED_DATA", REPO.parent / "shared" / "data")) / "ibsi_sts_mri"
PARAMS = REPO / "configs" / "radiomics" / "paper.yaml"
SUBBANDS = ("LLL", "HHH")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cervirad_case(job):
    """The stage's worker function, plus this worker's peak memory."""
    from cervirad.features.cases import extract_case

    res = extract_case(job)
    res["peak_mib"] = _peak_mib()
    return res


def plain_pyradiomics_loop(cases: list[tuple[str, Path, Path]], params: dict) -> dict[str, dict]:
    """Serial loop of plain PyRadiomics calls giving the same 851 features per case."""
    import logging

    from radiomics import featureextractor, imageoperations

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    no_wavelet = {**params, "imageType": {k: v for k, v in params["imageType"].items() if k != "Wavelet"}}
    ex = featureextractor.RadiomicsFeatureExtractor(no_wavelet)
    out = {}
    for pid, image_path, mask_path in cases:
        feats = {k: float(v) for k, v in ex.execute(str(image_path), str(mask_path)).items()
                 if not k.startswith("diagnostics_")}
        settings = ex.settings.copy()
        image, mask = ex.loadImage(str(image_path), str(mask_path), **settings)
        bbox, _ = imageoperations.checkMask(image, mask, **settings)
        for filtered, name, kwargs in imageoperations.getWaveletImage(image, mask, **settings):
            if name.split("-", 1)[1] in SUBBANDS:
                cropped, cmask = imageoperations.cropToTumorMask(filtered, mask, bbox)
                feats.update({k: float(v) for k, v in ex.computeFeatures(cropped, cmask, name, **kwargs).items()})
        out[pid] = feats
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="cervirad extraction vs serial PyRadiomics")
    ap.add_argument("--cases", type=int, default=18, help="number of cases (default all 18)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="cervirad worker processes")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"bench/extract: data not found at {DATA}; set CERVIRAD_SHARED_DATA", file=sys.stderr)
        return 2

    from cervirad.features.cases import CaseJob, label_voxels, run_jobs
    from cervirad.features.radiomics_ext import load_params

    params = load_params(PARAMS)
    cases = [(d.name, d / "MR_T1_image.nii.gz", d / "MR_T1_mask.nii.gz")
             for d in sorted(DATA.iterdir()) if (d / "MR_T1_mask.nii.gz").is_file()][: args.cases]
    jobs = sorted((CaseJob(pid, "t1", str(img), str(msk), params, SUBBANDS, 256, 1e-3, threads=1,
                           voxels=label_voxels(msk, 1)) for pid, img, msk in cases), key=lambda j: -j.voxels)
    print(f"bench/extract: {len(cases)} cases, {sum(j.voxels for j in jobs)} lesion voxels, paper preset, "
          f"{args.jobs} cervirad worker(s), {os.cpu_count()} CPU(s) (other work on the machine skews timings)")

    t0 = time.perf_counter()
    ours = {r["patient_id"]: r for r in run_jobs(jobs, args.jobs, fn=cervirad_case)}
    t_ours = time.perf_counter() - t0
    errors = [r["error"] for r in ours.values() if "error" in r]
    if errors:
        print(f"bench/extract: cervirad failed: {errors[0]}", file=sys.stderr)
        return 1
    worker_peak = max(r["peak_mib"] for r in ours.values())
    parent_peak = _peak_mib()

    t0 = time.perf_counter()
    base = plain_pyradiomics_loop(cases, params)
    t_base = time.perf_counter() - t0
    base_peak = _peak_mib()

    worst, n_values = 0.0, 0
    for pid, feats in base.items():
        mine = ours[pid]["features"]
        for k, v in feats.items():
            n_values += 1
            worst = max(worst, abs(mine[k] - v) / max(abs(v), 1e-12))
    n_feats = len(next(iter(base.values())))
    print(f"values: {n_feats} radiomics features per case, {n_values} compared, worst relative difference {worst:.2e}")
    print(f"serial PyRadiomics loop: {t_base:8.1f} s   peak RSS {base_peak:7.0f} MiB (one process)")
    print(f"cervirad extraction:     {t_ours:8.1f} s   peak RSS {worker_peak:7.0f} MiB per worker x "
          f"{min(args.jobs, len(jobs))}, parent {parent_peak:.0f} MiB")
    print(f"speed-up: {t_base / t_ours:.2f}x (goal >= 1.9x on 2 cores)")
    return 0 if worst < 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
