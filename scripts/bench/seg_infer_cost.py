"""Seconds per volume of every inference combination (issue 25 item 8): ensemble members x
test-time mirroring x sliding window, on a real 60-slice STS volume, with the default network.

The volume (default STS_004: 128 x 127 x 60, 0.98 x 0.98 x 3.27 mm) goes through `segment`'s own
path: read, ``prepare_volume`` at the planned spacing, ``predict_slices``, ``restore_mask``.
The network is the default config's (CRFE, rows+cols, 2.73 M parameters) with seeded random
weights: the time of a forward pass does not depend on the weight values. Members of an ensemble
are copies of it (the same cost as trained folds). Sliding window: "whole" = whole slices (what
the plan's patch gives on this cohort: its median in-plane extent is the patch), "96" = windows of a
96-pixel training patch (4 windows per 128-pixel slice, half-patch overlap).

Usage (pin to one core on a shared machine and say so):
    taskset -c 1 .venv/bin/python scripts/bench/seg_infer_cost.py [--case STS_004] [--threads 1]
Prints one row per combination (seconds per volume, network seconds, ms per slice) and the
machine load before and after. Members x mirroring with windows are measured for 1 member and
scaled by the member count (members run one after another: linear, checked on the whole-slice rows).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from cervirad.config import PreprocessConfig, SegmentationConfig
from cervirad.io import read_image
from cervirad.preprocess import prepare_volume, restore_mask
from cervirad.segmentation.infer import LoadedModel, predict_slices
from cervirad.segmentation.model import build_model, optimise_for_inference

DATA = Path(os.environ.get("CERVIRAD_SHARED_DATA", "/work/shared/data")) / "ibsi_sts_mri"


def loaded(n_members: int, mirror: bool, patch: int | None, net) -> LoadedModel:
    info = {"in_channels": 1, "input_sequences": ["t1w"], "train_patch": patch, "threshold": 0.5}
    return LoadedModel(net, info, torch.device("cpu"), [net] * n_members if n_members > 1 else [], mirror,
                       "auto" if patch else "never")


def one_volume(model: LoadedModel, image, pcfg: PreprocessConfig) -> tuple[float, float, int]:
    """(seconds read-to-mask, network seconds, slices) for one volume through segment's path."""
    t0 = time.perf_counter()
    prep = prepare_volume([image], pcfg)
    probs, net_s = predict_slices(model, prep.image, 8)
    restore_mask(probs, prep.meta, image, 0.5)
    return time.perf_counter() - t0, net_s, len(probs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default="STS_004")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--window", type=int, default=96)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"load average before: {os.getloadavg()}; torch threads {a.threads}; "
          f"affinity {sorted(os.sched_getaffinity(0))}")
    image = read_image(DATA / a.case / "MR_T1_image.nii.gz", a.case, "t1w")
    sp = image.GetSpacing()
    pcfg = PreprocessConfig(spacing=(sp[0], sp[1], sp[2]), normalize="volume", slice_axis="axial", slice_size=256)
    s = SegmentationConfig()
    torch.manual_seed(0)
    net = optimise_for_inference(build_model("crfe", 1, s.lstm_hidden, recurrence=s.recurrence).eval())
    one_volume(loaded(1, False, None, net), image, pcfg)  # warm-up
    rows = []
    for window in (None, a.window):
        for mirror in (False, True):
            for k in (1, a.members):
                if window and k > 1:
                    continue  # scaled from the 1-member row below
                total, net_s, n = one_volume(loaded(k, mirror, window, net), image, pcfg)
                rows.append((k, mirror, window, total, net_s, n, "measured"))
    for k, mirror, window, total, net_s, n, _ in [r for r in rows if r[2]]:
        other = total - net_s
        rows.append((a.members, mirror, window, other + a.members * net_s, a.members * net_s, n, "1 member x K"))
    print(f"{a.case}: {rows[0][5]} slices of {image.GetSize()[0]} x {image.GetSize()[1]}")
    print(f"{'members':>7} {'mirror':>6} {'window':>6} {'s/volume':>9} {'network s':>9} {'ms/slice':>8}  how")
    for k, mirror, window, total, net_s, n, how in rows:
        print(f"{k:>7} {'on' if mirror else 'off':>6} {window or 'whole':>6} {total:>9.1f} {net_s:>9.1f} "
              f"{1000 * net_s / n:>8.0f}  {how}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
