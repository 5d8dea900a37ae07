"""CPU training throughput of the default CRFE: today's path against the candidate speed-ups of
issue 25 item 5, measured interleaved in one run (so their ratios compare like with like on a
shared machine), with the largest output difference of each against today's after the same steps.

Candidates: channels-last memory for training (``--`` model and inputs NHWC) and bf16 autocast on
the CPU. Not candidates: "fused LSTM input" — torch's CPU LSTM already computes the input projection
of all time steps as one matrix product before the recurrence; inference — its shipped path
(``optimise_for_inference``: BN folded, channels-last, split head, chunked) is measured by
``seg_infer.py``. Measured on this machine (AMD EPYC Zen 2, AVX2, no AVX512-BF16), 1 thread pinned
to core 1, load average 8-11: channels-last 0.93x today's crops/s, bf16 0.03x: neither is kept.

Usage: taskset -c 1 .venv/bin/python scripts/bench/seg_throughput.py [--steps 5] [--patch 128] [--threads 1]
Tolerance: after the same optimiser steps, a candidate's logits must stay within 1e-3 (float32
round-off of another memory layout) of today's; bf16 is reported, not held to it.
"""
from __future__ import annotations

import argparse
import copy
import os
import time

import torch

from cervirad.config import SegmentationConfig
from cervirad.segmentation.losses import segmentation_loss
from cervirad.segmentation.model import build_model

TOLERANCE = 1e-3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    s = SegmentationConfig()
    torch.manual_seed(0)
    base = build_model("crfe", 1, s.lstm_hidden, recurrence=s.recurrence)
    x = torch.randn(a.batch, 1, a.patch, a.patch)
    y = (torch.rand(a.batch, a.patch, a.patch) > 0.9).float()
    variants = {"today": (False, False), "channels_last": (True, False), "bf16_autocast": (False, True)}
    nets = {}
    for name, (cl, _) in variants.items():
        net = copy.deepcopy(base)
        net = net.to(memory_format=torch.channels_last) if cl else net
        nets[name] = (net, torch.optim.Adam(net.parameters(), 1e-3))
    times = {k: [] for k in variants}
    print(f"load average {os.getloadavg()}, threads {a.threads}, affinity {sorted(os.sched_getaffinity(0))}")
    for _ in range(a.steps):
        for name, (cl, bf) in variants.items():
            net, opt = nets[name]
            xi = x.contiguous(memory_format=torch.channels_last) if cl else x
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf):
                out = net(xi)
            loss = segmentation_loss(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times[name].append(time.perf_counter() - t0)
    with torch.no_grad():
        ref = nets["today"][0].eval()(x)
        for name in variants:
            diff = float((nets[name][0].eval()(x) - ref).abs().max())
            rate = a.batch / min(times[name][1:] or times[name])
            today = a.batch / min(times["today"][1:] or times["today"])
            ok = "within" if diff <= TOLERANCE else "OUTSIDE"
            print(f"{name:>14}: {rate:6.2f} crops/s, {rate / today:5.2f}x today's; max |logit diff| {diff:.2e} "
                  f"({ok} {TOLERANCE:g})")


if __name__ == "__main__":
    main()
