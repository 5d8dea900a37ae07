"""CRFE on a CUDA GPU: training slices/s with bf16 autocast and inference slices/s.

Usage: .venv/bin/python scripts/bench/seg_gpu.py [--batch 64] [--steps 30]
Goal (issue 3): >= 3,000 training slices/s on an H100. Exits with status 0 and a one-line
message when no CUDA device is present (so `make bench` runs on CPU-only machines), or with
status 2 when --require-gpu is given.

Baseline measured in the same run: float32 training (no autocast) at the same batch size.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from cervirad.segmentation.losses import segmentation_loss
from cervirad.segmentation.model import build_model, optimise_for_inference


def train_rate(model, batch: int, steps: int, bf16: bool, channels_last: bool) -> float:
    dev = torch.device("cuda")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, 256, 256, device=dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, 256, 256, device=dev) > 0.9).float()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = segmentation_loss(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


@torch.inference_mode()
def infer_rate(model, batch: int, steps: int) -> float:
    x = torch.randn(batch, 1, 256, 256, device="cuda").contiguous(memory_format=torch.channels_last)
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(x)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(x)
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--require-gpu", action="store_true")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print(f"seg_gpu: no CUDA device available (torch {torch.__version__}, built for CUDA "
              f"{torch.version.cuda or 'none'}); run this on a machine with an NVIDIA GPU and a CUDA build of torch.")
        return 2 if a.require_gpu else 0
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(0)
    print(f"CRFE on {name}, 256 x 256 slices, batch {a.batch}:")
    for arch in ("crfe", "unet"):
        torch.manual_seed(0)
        fp32 = train_rate(build_model(arch, 1).cuda(), a.batch, a.steps, bf16=False, channels_last=False)
        torch.manual_seed(0)
        model = build_model(arch, 1).cuda().to(memory_format=torch.channels_last)
        bf16 = train_rate(model, a.batch, a.steps, bf16=True, channels_last=True)
        inf = infer_rate(optimise_for_inference(model.eval()), a.batch * 2, a.steps)
        print(f"  {arch}: training fp32 {fp32:8.0f} slices/s | bf16 + channels-last {bf16:8.0f} slices/s "
              f"(x{bf16 / fp32:.2f}; goal >= 3000) | inference bf16 {inf:8.0f} slices/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
