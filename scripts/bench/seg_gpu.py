"""CRFE on a CUDA GPU: training slices/s and inference ms/slice, with a CPU baseline from the same run.

Training (256 x 256 slices, Adam, Dice + BCE, batch ``--batch``), each measured after warm-up:
  fp32            eager float32, NCHW (the GPU baseline)
  bf16+cl         bf16 autocast, channels-last memory, cudnn.benchmark (what train-seg does on CUDA,
                  plus channels-last)
  bf16+cl+compile the same under ``torch.compile`` (compile time reported apart; kept only if faster)
Inference: the shipped path (:func:`optimise_for_inference`: BN folded, channels-last) under bf16
autocast, ms per slice at batch 1 and 64 (best of ``--steps``).
CPU baseline, measured in this same run: training slices/s at batch 4 and inference ms/slice at
batch 1 with every CPU thread (float32, the shipped CPU path).

Usage: .venv/bin/python scripts/bench/seg_gpu.py [--batch 64] [--steps 30] [--no-compile] [--require-gpu]
Goal (issue 16): >= 3,000 training slices/s at 256 x 256 on one H100 (the paper's 100 epochs in
about a minute). Without a CUDA device it prints one line saying so and exits 0 (2 with
--require-gpu), so `make bench` runs on CPU-only machines.
Ends with one line: figure, goal, same-run CPU baseline, ratio, MET / NOT MET.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from cervirad.config import SegmentationConfig
from cervirad.segmentation.losses import segmentation_loss
from cervirad.segmentation.model import build_model, optimise_for_inference

RECURRENCE = SegmentationConfig().recurrence  # the default network (segmentation.recurrence)


def net(arch: str = "crfe") -> torch.nn.Module:
    """A fresh ``arch`` with one input channel and the default recurrence."""
    return build_model(arch, 1, recurrence=RECURRENCE)


GOAL = 3000.0  # training slices/s at 256 x 256 on one H100
SIZE = 256


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def train_rate(model, dev: torch.device, batch: int, steps: int, bf16: bool, channels_last: bool,
               warmup: int = 3) -> tuple[float, float]:
    """(slices/s over ``steps`` Adam steps, seconds of the warm-up steps, which include any compiling)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 1, SIZE, SIZE, generator=g).to(dev)
    y = (torch.rand(batch, SIZE, SIZE, generator=g) > 0.9).float().to(dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = segmentation_loss(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(dev)
    t_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(dev)
    return steps * batch / (time.perf_counter() - t0), t_warm


@torch.inference_mode()
def infer_ms(model, dev: torch.device, batch: int, steps: int, bf16: bool) -> float:
    """Best-of-``steps`` ms per slice of the shipped path at ``batch``."""
    x = torch.randn(batch, 1, SIZE, SIZE, device=dev).contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(steps + 3):
        _sync(dev)
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            model(x)
        _sync(dev)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return 1000.0 * min(times) / batch


def cpu_baseline(steps: int) -> tuple[float, float, int]:
    """(training slices/s at batch 4, inference ms/slice at batch 1, threads) on this machine's CPU."""
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    rate, _ = train_rate(net().to(memory_format=torch.channels_last), cpu, 4, steps, False, True,
                         warmup=1)
    torch.manual_seed(0)
    ms = infer_ms(optimise_for_inference(net().eval()), cpu, 1, max(3, steps), False)
    return rate, ms, threads


def gpu_training(arch: str, dev: torch.device, a: argparse.Namespace) -> dict:
    """Training slices/s of ``arch`` in the three modes (see module doc)."""
    out = {}
    torch.manual_seed(0)
    out["fp32"], _ = train_rate(net(arch).to(dev), dev, a.batch, a.steps, bf16=False, channels_last=False)
    torch.manual_seed(0)
    model = net(arch).to(dev).to(memory_format=torch.channels_last)
    out["bf16+cl"], _ = train_rate(model, dev, a.batch, a.steps, bf16=True, channels_last=True)
    if not a.no_compile:
        torch.manual_seed(0)
        try:
            compiled = torch.compile(net(arch).to(dev).to(memory_format=torch.channels_last))
            out["bf16+cl+compile"], out["compile_s"] = train_rate(compiled, dev, a.batch, a.steps, bf16=True,
                                                                  channels_last=True)
        except Exception as e:  # no triton, an unsupported op...: report it and keep the eager numbers
            out["compile_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--cpu-steps", type=int, default=3, help="steps of the CPU baseline")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    ap.add_argument("--require-gpu", action="store_true", help="exit 2 when no CUDA device is present")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print(f"crfe gpu train: not measured, no CUDA device (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda or 'none'}; goal >= {GOAL:.0f} slices/s on one H100) SKIPPED")
        return 2 if a.require_gpu else 0
    cpu_train, cpu_ms, threads = cpu_baseline(a.cpu_steps)
    print(f"CPU baseline ({threads} threads, float32): training {cpu_train:.1f} slices/s (batch 4) | inference "
          f"{cpu_ms:.1f} ms/slice (batch 1)")
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, 256 x 256 slices, training batch "
          f"{a.batch}, {a.steps} steps after warm-up:")
    best = {}
    for arch in ("crfe", "unet"):
        r = gpu_training(arch, dev, a)
        modes = [m for m in ("fp32", "bf16+cl", "bf16+cl+compile") if m in r]
        best[arch] = max(modes, key=lambda m: r[m])
        extra = (f" | compile {r['compile_s']:.0f} s warm-up" if "compile_s" in r else "") + \
                (f" | compile failed ({r['compile_error']})" if "compile_error" in r else "")
        print(f"  {arch} training: " + " | ".join(f"{m} {r[m]:7.0f} slices/s" for m in modes)
              + f" | best {best[arch]} x{r[best[arch]] / r['fp32']:.2f} vs fp32{extra}")
        best[arch] = (best[arch], r[best[arch]])
    torch.manual_seed(0)
    shipped = optimise_for_inference(net().eval()).to(dev)
    gpu_ms = {b: infer_ms(shipped, dev, b, a.steps, True) for b in (1, 64)}
    print(f"  crfe inference (shipped path, bf16): batch 1 {gpu_ms[1]:.2f} ms/slice | batch 64 {gpu_ms[64]:.3f} "
          f"ms/slice | CPU batch 1 {cpu_ms:.1f} ms/slice (x{cpu_ms / gpu_ms[64]:.0f} at batch 64)")
    mode, rate = best["crfe"]
    print(f"crfe gpu train: {rate:.0f} slices/s, batch {a.batch}, {mode} on {torch.cuda.get_device_name(0)} "
          f"(goal >= {GOAL:.0f}; cpu {cpu_train:.1f}; x{rate / cpu_train:.0f}) {'MET' if rate >= GOAL else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
