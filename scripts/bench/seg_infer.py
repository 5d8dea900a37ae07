"""CRFE speed on the CPU: forward ms per 256 x 256 slice (eager vs the shipped optimised path)
at batch 1 and 8, and training slices/s — all measured in this one run with the same threads.

Eager   = the model as trained: eval mode, BatchNorm separate, NCHW, torch.no_grad().
Shipped = :func:`cervirad.segmentation.model.optimise_for_inference` as used by `cervirad segment`:
          conv+BN folded, channels-last memory, torch.inference_mode().
Training: Adam steps on batches of 4 (Dice + BCE), whole 256 x 256 slices (paper) and the
          demo config's random crops.

Usage: .venv/bin/python scripts/bench/seg_infer.py [--threads 2] [--repeats 5]
Goal (issue 3): <= 40 ms per slice on 2 CPU threads; the paper reports 450 ms per image.
Other processes on the machine inflate the absolute numbers; the ratios compare like with like.
"""
from __future__ import annotations

import argparse
import time

import torch

from cervirad.segmentation.losses import segmentation_loss
from cervirad.segmentation.model import build_model, optimise_for_inference


def forward_ms(model, x: torch.Tensor, repeats: int, inference_mode: bool) -> float:
    """Best-of-``repeats`` wall time per slice in ms (after two warm-up passes)."""
    ctx = torch.inference_mode if inference_mode else torch.no_grad
    times = []
    with ctx():
        for _ in range(2):
            model(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return 1000.0 * min(times) / x.shape[0]


def train_slices_per_s(arch: str, size: int, steps: int, batch: int = 4) -> float:
    torch.manual_seed(0)
    model = build_model(arch, 1).train()
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
    ap.add_argument("--train-steps", type=int, default=4)
    ap.add_argument("--crop", type=int, default=128, help="training crop of the demo config")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    eager = build_model("crfe", 1).eval()
    with torch.no_grad():  # give BatchNorm non-trivial statistics, as after training
        eager.train()(torch.randn(4, 1, 256, 256))
    eager.eval()
    shipped = optimise_for_inference(eager)
    print(f"CRFE CPU inference, {a.threads} threads, 256 x 256 slices (best of {a.repeats}):")
    for bs in (1, 8):
        x = torch.randn(bs, 1, 256, 256)
        e = forward_ms(eager, x, a.repeats, inference_mode=False)
        s = forward_ms(shipped, x.contiguous(memory_format=torch.channels_last), a.repeats, inference_mode=True)
        print(f"  batch {bs}: eager {e:7.1f} ms/slice | optimised {s:7.1f} ms/slice | speed-up x{e / s:.2f} | "
              f"goal 40 ms: {'met' if s <= 40 else 'not met'} | paper 450 ms/image: x{450 / s:.1f} faster")
    for arch in ("crfe", "unet"):
        full = train_slices_per_s(arch, 256, a.train_steps)
        crop = train_slices_per_s(arch, a.crop, a.train_steps)
        print(f"  training {arch}: {full:6.2f} slices/s at 256 x 256 | {crop:6.2f} crops/s at {a.crop} x {a.crop} "
              f"(batch 4, Adam)")


if __name__ == "__main__":
    main()
