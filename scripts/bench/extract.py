"""Benchmark: cervirad feature extraction vs a plain serial PyRadiomics loop (same cases, same settings).

Cases: the first 18 (of 37) real T1w MRI volumes with tumour masks in ../shared/data/ibsi_sts_mri, paper preset
(configs/radiomics/paper.yaml, wavelet LLL + HHH: 851 radiomics features per case).

- cervirad: the stage's job engine (:func:`cervirad.features.cases.extract_jobs`: every case cut into
  parts — shape + histogram, then one per image type — largest case first, one process per core,
  merged per case, no cache), which also computes the 9 histogram features.
- baseline: a serial loop of plain PyRadiomics calls: ``RadiomicsFeatureExtractor.execute`` for
  every image type except the wavelet, then the wavelet LLL and HHH sub-bands through PyRadiomics'
  own ``getWaveletImage`` + ``computeFeatures`` (plain PyRadiomics cannot skip sub-bands).

Prints both times, each worker's busy time (sum of its parts) and idle tail, peak memory, checks
that both give the same 851 values to the last bit, and ends with one line: ratio, goal, the
serial time of this run, MET / NOT MET. Other work on the machine skews both times.
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


def cervirad_part(part):
    """The stage's part function, plus this worker's id, start/end times and peak memory."""
    from cervirad.features.cases import extract_part

    t0, c0 = time.time(), time.process_time()
    res = extract_part(part)
    res["timing"] = (os.getpid(), t0, time.time(), _peak_mib(), time.process_time() - c0, res["case"])
    return res


def list_schedule(costs: list[float], workers: int) -> float:
    """Makespan when ``workers`` take the tasks in this order, each the next task as it frees up."""
    free = [0.0] * workers
    for c in costs:
        free[free.index(min(free))] += c
    return max(free)


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
    ap.add_argument("--cases", type=int, default=18, help="number of cases (default the first 18 of 37)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="cervirad worker processes")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"bench/extract: data not found at {DATA}; set CERVIRAD_SHARED_DATA", file=sys.stderr)
        return 2

    from cervirad.features.cases import CaseJob, extract_jobs, label_voxels
    from cervirad.features.radiomics_ext import load_params

    params = load_params(PARAMS)
    cases = [(d.name, d / "MR_T1_image.nii.gz", d / "MR_T1_mask.nii.gz")
             for d in sorted(DATA.iterdir()) if (d / "MR_T1_mask.nii.gz").is_file()][: args.cases]
    jobs = sorted((CaseJob(pid, "t1", str(img), str(msk), params, SUBBANDS, {"histogram_bins": 256}, 1e-3, threads=1,
                           voxels=label_voxels(msk, 1)) for pid, img, msk in cases), key=lambda j: -j.voxels)
    print(f"bench/extract: {len(cases)} cases, {sum(j.voxels for j in jobs)} lesion voxels, paper preset, "
          f"{args.jobs} cervirad worker(s), {os.cpu_count()} CPU(s) (other work on the machine skews timings)")

    t0, t_start = time.perf_counter(), time.time()
    ours = {r["patient_id"]: r for r in extract_jobs(jobs, args.jobs, part_fn=cervirad_part)}
    t_ours = time.perf_counter() - t0
    errors = [r["error"] for r in ours.values() if "error" in r]
    if errors:
        print(f"bench/extract: cervirad failed: {errors[0]}", file=sys.stderr)
        return 1
    timings = [t for r in ours.values() for t in r.get("timings", [])]  # none with one worker (whole cases)
    worker_peak = max((t[3] for t in timings), default=_peak_mib())
    parent_peak = _peak_mib()
    for pid in sorted({t[0] for t in timings}):
        mine = [t for t in timings if t[0] == pid]
        busy, last = sum(t[2] - t[1] for t in mine), max(t[2] for t in mine) - t_start
        print(f"  worker {pid}: {len(mine)} parts, busy {busy:6.1f} s of {t_ours:.1f} s ({100 * busy / t_ours:.0f} %), "
              f"last part ends at {last:.1f} s")

    t0, c0 = time.perf_counter(), time.process_time()
    base = plain_pyradiomics_loop(cases, params)
    t_base, c_base = time.perf_counter() - t0, time.process_time() - c0
    base_peak = _peak_mib()
    if timings:  # CPU seconds, which other work on the machine hardly changes: the schedule on its own
        order = sorted(timings, key=lambda t: t[1])
        parts = list_schedule([t[4] for t in order], args.jobs)
        by_case: dict = {}
        for t in timings:
            by_case[t[5]] = by_case.get(t[5], 0.0) + t[4]
        whole = list_schedule([by_case[c] for c in sorted(by_case)], args.jobs)
        print(f"CPU-time schedule ({args.jobs} workers, parts in the order they started): serial PyRadiomics "
              f"{c_base:.1f} CPU s | parts {sum(by_case.values()):.1f} CPU s, makespan {parts:.1f} s -> "
              f"x{c_base / parts:.2f} "
              f"| whole cases largest first, makespan {whole:.1f} s -> x{c_base / whole:.2f}")

    worst, n_values = 0.0, 0
    for pid, feats in base.items():
        mine = ours[pid]["features"]
        for k, v in feats.items():
            n_values += 1
            worst = max(worst, abs(mine[k] - v) / max(abs(v), 1e-12))
    n_feats = len(next(iter(base.values())))
    print(f"values: {n_feats} radiomics features per case, {n_values} compared, worst relative difference {worst:.2e}"
          f"{' (bit-identical)' if worst == 0.0 else ''}")
    print(f"serial PyRadiomics loop: {t_base:8.1f} s   peak RSS {base_peak:7.0f} MiB (one process)")
    print(f"cervirad extraction:     {t_ours:8.1f} s   peak RSS {worker_peak:7.0f} MiB per worker x "
          f"{min(args.jobs, len(jobs))}, parent {parent_peak:.0f} MiB")
    ratio = t_base / t_ours
    print(f"extract {len(cases)} cases: x{ratio:.2f} vs serial PyRadiomics, {args.jobs} workers (goal >= x1.9; "
          f"serial {t_base:.1f} s; cervirad {t_ours:.1f} s) {'MET' if ratio >= 1.9 else 'NOT MET'}")
    return 0 if worst < 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
