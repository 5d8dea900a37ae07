"""CRFE speed on the CPU: forward ms per 256 x 256 slice (eager vs the shipped optimised path)
at batch 1 and 8, and training slices/s — all measured in this one run with the same threads.

Eager   = the model as trained: eval mode, BatchNorm separate, NCHW, torch.no_grad().
Shipped = :func:`cervirad.segmentation.model.optimise_for_inference` as used by `cervirad segment`:
          conv+BN folded, the 1x1 head split (no full-size concat), channels-last memory,
          torch.inference_mode(), and CPU batches run one slice at a time (so "batch 8" is the
          shipped path given 8 slices at once, as `predict_slices` gives them).
Also tried for issue 16 and not shipped (a trained demo CRFE, measured alternately in one
process on a heavily shared machine): a frozen TorchScript trace (with and without
torch.jit.optimize_for_inference) was no faster than the shipped eager path and is specialised
to one input shape; bf16 autocast on the CPU changed masks (Dice 0.998 vs eager, below the 0.999
bar); int8 dynamic quantisation of the LSTM kept masks (Dice 0.9998) but the LSTM is ~8 % of the
time and it gained nothing measurable; torch.compile (inductor) gave identical outputs and ~13 %
less time per slice (1 thread) but its first call took 236 s (compiling), more than segmenting
a cohort, and again for every new input shape.
Training: Adam steps on batches of 4 (Dice + BCE), whole 256 x 256 slices (paper) and the
          demo config's random crops.

Usage: .venv/bin/python scripts/bench/seg_infer.py [--threads 2] [--repeats 5]
Goal (issues 3, 16): <= 40 ms per slice at batch 1 on 2 CPU threads; the paper reports 450 ms per
image. Other processes on the machine inflate the absolute numbers (eager and shipped are
measured interleaved, so their ratio compares like with like). Ends with one line: shipped
ms/slice, goal, eager in this run, ratio, MET / NOT MET.
"""
from __future__ import annotations

import argparse
import time

import torch

from cervirad.config import SegmentationConfig
from cervirad.segmentation.losses import segmentation_loss
from cervirad.segmentation.model import build_model, optimise_for_inference

RECURRENCE = SegmentationConfig().recurrence  # the default network (segmentation.recurrence)


def forward_ms(eager, shipped, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` ms per slice of eager (NCHW, no_grad) and shipped (channels-last,
    inference_mode), measured alternately after two warm-up passes each."""
    xs = x.contiguous(memory_format=torch.channels_last)
    te, ts = [], []
    with torch.no_grad():
        for _ in range(2):
            eager(x)
    with torch.inference_mode():
        for _ in range(2):
            shipped(xs)
    for _ in range(repeats):
        with torch.no_grad():
            t0 = time.perf_counter()
            eager(x)
            te.append(time.perf_counter() - t0)
        with torch.inference_mode():
            t0 = time.perf_counter()
            shipped(xs)
            ts.append(time.perf_counter() - t0)
    return 1000.0 * min(te) / x.shape[0], 1000.0 * min(ts) / x.shape[0]


def train_slices_per_s(arch: str, size: int, steps: int, batch: int = 4) -> float:
    torch.manual_seed(0)
    model = build_model(arch, 1, recurrence=RECURRENCE).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, size, size)
    y = (torch.rand(batch, size, size) > 0.9).float()

    def step():
        loss = segmentation_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--train-steps", type=int, default=4, help="0: skip the training rates")
    ap.add_argument("--crop", type=int, default=128, help="training crop of the demo config")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    eager = build_model("crfe", 1, recurrence=RECURRENCE).eval()
    with torch.no_grad():  # give BatchNorm non-trivial statistics, as after training
        eager.train()(torch.randn(4, 1, 256, 256))
    eager.eval()
    shipped = optimise_for_inference(eager)
    print(f"CRFE (recurrence {RECURRENCE}) CPU inference, {a.threads} threads, 256 x 256 slices (best of "
          f"{a.repeats}):")
    ms = {}
    for bs in (1, 8):
        e, s = ms[bs] = forward_ms(eager, shipped, torch.randn(bs, 1, 256, 256), a.repeats)
        print(f"  batch {bs}: eager {e:7.1f} ms/slice | shipped {s:7.1f} ms/slice | speed-up x{e / s:.2f} | "
              f"paper 450 ms/image: x{450 / s:.1f} faster")
    for arch in ("crfe", "unet") if a.train_steps else ():
        full = train_slices_per_s(arch, 256, a.train_steps)
        crop = train_slices_per_s(arch, a.crop, a.train_steps)
        print(f"  training {arch}: {full:6.2f} slices/s at 256 x 256 | {crop:6.2f} crops/s at {a.crop} x {a.crop} "
              f"(batch 4, Adam)")
    e, s = ms[1]
    print(f"crfe cpu infer: {s:.1f} ms/slice, batch 1, {a.threads} threads (goal <= 40; eager {e:.1f}; x{e / s:.2f}) "
          f"{'MET' if s <= 40 else 'NOT MET'}")


if __name__ == "__main__":
    main()
