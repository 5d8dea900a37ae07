"""Benchmark: perturbation robustness on the 18 real STS MRI volumes (paper radiomics preset).

Cases: ``../shared/data/ibsi_sts_mri/STS_xxx/MR_T1_{image,mask}.nii.gz`` (T1w, expert GTV masks),
configs/radiomics/paper.yaml with wavelet LLL + HHH (851 radiomics + 9 histogram features per case).

In N = 5 rounds (interleaved, so that the load of a shared machine weighs on both alike):

1. baseline: the feature stage's executor (:func:`cervirad.features.cases.run_jobs`, largest lesion
   first, one process per core, no cache) extracts every case once, unperturbed;
2. robustness: the same executor runs perturbation r of every case (the stage's perturbed worker
   :func:`cervirad.features.perturbation.extract_perturbed`, the chain with its default settings,
   seed 42, no cache).

Then ICC(1,1) / ICC(3,1) per feature over the N perturbations. Goal: the N perturbed extractions
take at most 1.25 x the N unperturbed ones (wall time, same run): the perturbation itself (noise,
rigid resampling, mask edits, temporary files) adds at most a quarter to the extraction it feeds.
The workers' CPU seconds are printed too (unlike wall time, they do not depend on other load). Prints the share of features with ICC(1,1) >= 0.75
(and >= 0.9) per feature class and per image type, and ends with one line
``robustness: ... (goal ...; baseline ...; xratio) MET|NOT MET``.

Usage: .venv/bin/python scripts/bench/perturbation.py [--cases N] [--perturbations 5] [--jobs J]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("CERVIRAD_SHARED_DATA", REPO.parent / "shared" / "data")) / "ibsi_sts_mri"
PARAMS = REPO / "configs" / "radiomics" / "paper.yaml"
SUBBANDS = ("LLL", "HHH")
GOAL = 1.25


def _table(df, by: str) -> str:
    lines = [f"{by:<22} {'features':>8} {'median ICC1':>11} {'ICC1>=0.75':>10} {'ICC1>=0.9':>9} {'ICC3>=0.75':>10}"]
    groups = list(df.groupby(by, sort=True)) + [("all", df)]
    for k, g in groups:
        lines.append(f"{k:<22} {len(g):>8} {g['icc1'].median():>11.3f} {100 * (g['icc1'] >= 0.75).mean():>9.0f}% "
                     f"{100 * (g['icc1'] >= 0.9).mean():>8.0f}% {100 * (g['icc3'] >= 0.75).mean():>9.0f}%")
    return "\n".join(lines)


def _cpu(fn, job) -> dict:
    """Run a worker function and record its CPU seconds (process time of the worker)."""
    t0 = time.process_time()
    res = fn(job)
    res["cpu"] = time.process_time() - t0
    return res


def _base(job) -> dict:
    from cervirad.features.cases import extract_case

    return _cpu(extract_case, job)


def _perturbed(job) -> dict:
    from cervirad.features.perturbation import extract_perturbed

    return _cpu(extract_perturbed, job)


def _warm(job) -> dict:
    """Start the worker processes and import what both runs need, so neither timing pays for it."""
    import radiomics  # noqa: F401
    import scipy.ndimage  # noqa: F401
    import SimpleITK  # noqa: F401

    return {"patient_id": job.patient_id}


def main() -> int:
    ap = argparse.ArgumentParser(description="perturbation robustness on the STS volumes")
    ap.add_argument("--cases", type=int, default=18, help="number of cases (default all 18)")
    ap.add_argument("--perturbations", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    ap.add_argument("--csv", type=Path, default=None, help="also write the robustness table here")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"bench/perturbation: data not found at {DATA}; set CERVIRAD_SHARED_DATA", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)

    from cervirad.config import RobustnessConfig
    from cervirad.features import perturbation as R
    from cervirad.features.cases import CaseJob, label_voxels, run_jobs
    from cervirad.features.radiomics_ext import load_params
    from cervirad.features.stage import assemble, category

    params = load_params(PARAMS)
    cases = [(d.name, d / "MR_T1_image.nii.gz", d / "MR_T1_mask.nii.gz")
             for d in sorted(DATA.iterdir()) if (d / "MR_T1_mask.nii.gz").is_file()][: args.cases]
    jobs = sorted((CaseJob(pid, "t1", str(img), str(msk), params, SUBBANDS, {"histogram_bins": 256}, 1e-3, threads=1,
                           voxels=label_voxels(msk, 1)) for pid, img, msk in cases), key=lambda j: -j.voxels)
    n = args.perturbations
    print(f"bench/perturbation: {len(jobs)} cases, N = {n} perturbations, paper preset, {args.jobs} worker(s), "
          f"{os.cpu_count()} CPU(s) (other work on the machine skews timings)")

    list(run_jobs(jobs[: args.jobs], args.jobs, fn=_warm))
    rcfg = RobustnessConfig(perturbations=n)
    pjobs = R.perturbed_jobs(jobs, {pid for pid, _, _ in cases}, rcfg, seed=42)
    t_base = t_pert = cpu_base = cpu_pert = 0.0
    results: list[dict] = []
    for r in range(n):
        t0 = time.perf_counter()
        base = list(run_jobs(jobs, args.jobs, fn=_base))
        t_base += time.perf_counter() - t0
        cpu_base += sum(b["cpu"] for b in base)
        errors = [b["error"] for b in base if "error" in b]
        if errors:
            print(f"bench/perturbation: unperturbed extraction failed: {errors[0]}", file=sys.stderr)
            return 1
        todo = [j for j in pjobs if j.perturbation.index == r]
        t0 = time.perf_counter()
        got = list(run_jobs(todo, args.jobs, fn=_perturbed))
        t_pert += time.perf_counter() - t0
        cpu_pert += sum(g["cpu"] for g in got)
        results += got
        print(f"round {r + 1}/{n}: unperturbed {t_base:.1f} s, perturbed {t_pert:.1f} s so far", flush=True)
    table, _ = assemble(base, ("t1",))
    columns = list(table.columns)
    X, patients, warnings = R.perturbed_values(results, columns, ("t1",), n)
    for w in warnings:
        print(f"warning: {w}")
    rob = R.robustness_table(X, columns, lambda c: category(c), ())
    if args.csv:
        rob.to_csv(args.csv, index=False)

    print(f"\nICC over {n} perturbations of {len(patients)} patients, {len(columns)} features "
          f"({len(warnings)} perturbation(s) left out)\n")
    print(_table(rob, "feature_class"))
    print()
    print(_table(rob, "image_type"))
    baseline = t_base
    ratio = t_pert / baseline
    print(f"\n{n} x unperturbed extraction: {t_base:.1f} s wall, {cpu_base:.1f} s worker CPU; {n} perturbed "
          f"extractions: {t_pert:.1f} s wall, {cpu_pert:.1f} s worker CPU (CPU ratio x{cpu_pert / cpu_base:.2f})")
    verdict = "MET" if ratio <= GOAL else "NOT MET"
    print(f"robustness: {len(jobs)} cases x {n} perturbations extracted in {t_pert:.1f} s, "
          f"{100 * (rob['icc1'] >= 0.75).mean():.0f} % of features with ICC(1,1) >= 0.75 "
          f"(goal <= {GOAL} x baseline; baseline {n} x unperturbed extraction = {baseline:.1f} s; x{ratio:.2f}) "
          f"{verdict}")
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
