"""Data-parallel training under ``torchrun`` (``torchrun --standalone --nproc_per_node N -m cervirad train-seg ...``).

torchrun starts N copies of the command, each with ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in
its environment. cervirad gives them different jobs:

- **rank 0** runs the command as a single process would: the stages ``train-seg`` needs
  (validate, preprocess, plan), then every training of the stage. Before each training it
  broadcasts a :class:`~.train.TrainJob` (config, architecture, patients, folder, stage key); when
  the command has succeeded it broadcasts ``None`` (when it fails it exits and torchrun stops the rest). Only rank 0 writes: checkpoints, logs, metrics, masks, the report.
- **ranks 1..N-1** (:func:`follow`) receive the jobs and train alongside rank 0, writing nothing,
  and return when ``None`` arrives.

Inside a training (:class:`~.train.Trainer`): the model is wrapped in ``DistributedDataParallel``
(gradients averaged across ranks); every rank draws the same epoch order from the shared seeded
generator and takes its shard ``order[rank::N]`` (DistributedSampler's rule; the order is padded
by wrapping so every rank runs the same number of steps), so one step's global batch is
N x ``batch_size`` slices, the same slices a single process with ``batch_size`` x N would use.
Augmentation draws from a generator seeded by (seed, epoch, rank); torch is seeded with
``seed + rank`` after the model is built (every rank starts from rank 0's weights, which DDP
broadcasts). Validation slices are sharded too; the Dice counts and the losses are summed over
ranks (all-reduce), so every rank sees the same validation Dice and early stopping, the time
budget and the best epoch are decided identically everywhere. A killed run resumes as a single
process does: every rank loads the ``last.pt`` rank 0 wrote.

Backend: ``nccl`` for CUDA tensors and ``gloo`` for CPU ones (``cpu:gloo,cuda:nccl`` when CUDA
is present; gloo alone otherwise, which is what the CPU test uses).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


LAUNCH_VARS = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")  # what torchrun sets beside WORLD_SIZE


def world() -> World:
    """This process's place, from torchrun's environment (a single process without it). A
    ``WORLD_SIZE`` above 1 without the rest of torchrun's variables is a ConfigError (one line)."""
    from ..errors import ConfigError

    env = os.environ
    try:
        w = World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))
    except ValueError as e:
        raise ConfigError(f"torchrun's environment is not understood ({e}); unset WORLD_SIZE/RANK/LOCAL_RANK to "
                          "run one process, or launch with `torchrun --nproc_per_node N -m cervirad ...`.") from None
    missing = [v for v in LAUNCH_VARS if w.distributed and not env.get(v)]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigError(f"WORLD_SIZE={w.size} is set but {', '.join(missing)} {verb} not: cervirad runs on several "
                          "processes only under torchrun; launch with `torchrun --standalone --nproc_per_node N -m "
                          "cervirad train-seg ...`, or unset WORLD_SIZE.")
    return w


def current() -> World:
    """The world of the initialised process group (a single process when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), world().local_rank)
    return World()


def init() -> World:
    """Join torchrun's process group (no-op for a single process)."""
    w = world()
    if not w.distributed or dist.is_initialized():
        return current()
    if torch.cuda.is_available():
        torch.cuda.set_device(w.local_rank)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    log.info("train-seg: rank %d of %d joined (%s)", w.rank, w.size, backend)
    return current()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def announce(job) -> None:
    """Rank 0: send the next job (a :class:`~.train.TrainJob`; None: no more) to the other ranks."""
    if current().distributed:
        dist.broadcast_object_list([job], src=0)


def follow() -> int:
    """Ranks 1..N-1: train every announced job until None; returns the number of jobs trained."""
    n, pools = 0, {}
    while True:
        box = [None]
        dist.broadcast_object_list(box, src=0)
        job = box[0]
        if job is None:
            return n
        trainer = job.trainer(progress=False, pools=pools)
        trainer.resume()
        trainer.fit()
        n += 1


def run_ranks(command) -> int:
    """torchrun entry (``cervirad.cli.main``): rank 0 runs ``command`` (a callable that ends in
    ``SystemExit``), the others :func:`follow`. Rank 0 releases them with ``None`` only when the
    command succeeded; when it fails it exits non-zero and torchrun stops the other ranks."""
    w = init()
    if not w.main:
        n = follow()
        log.debug("rank %d: trained %d job(s)", w.rank, n)
        shutdown()
        return 0
    try:
        command()
        code = 0
    except SystemExit as e:
        code = 0 if e.code is None else e.code
    if code == 0:
        announce(None)
        shutdown()
    return code


def shard(order: np.ndarray, w: World, *others: np.ndarray | None) -> tuple:
    """``order`` (and arrays aligned with it) padded by wrapping to a multiple of the world size,
    then this rank's share ``[rank::size]``."""
    if not w.distributed:
        return (order, *others)
    n = len(order)
    pad = (-n) % w.size
    take = np.concatenate([np.arange(n), np.arange(pad) % max(1, n)]).astype(int)[w.rank::w.size]
    return (order[take], *(None if o is None else o[take] for o in others))


def all_sum(values: list[float], w: World) -> list[float]:
    """Element-wise sum over ranks (the values themselves for a single process)."""
    if not w.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_max(value: float, w: World) -> float:
    if not w.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def wrap(model: torch.nn.Module, device: torch.device, w: World) -> torch.nn.Module:
    """``model`` in DistributedDataParallel (parameters broadcast from rank 0), or itself. On CUDA its
    BatchNorm layers become SyncBatchNorm; on CPU (gloo) each rank normalises its own share of the batch."""
    if not w.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = None
    if device.type == "cuda":  # one BatchNorm over the global batch (in place: the net's root is no BatchNorm)
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [device.index if device.index is not None else w.local_rank]
    return DistributedDataParallel(model, device_ids=ids)


__all__ = ["World", "world", "current", "init", "shutdown", "announce", "follow", "run_ranks", "shard",
           "all_sum", "all_max", "wrap"]
