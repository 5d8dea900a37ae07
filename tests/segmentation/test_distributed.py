"""Data-parallel training under torchrun (cervirad.segmentation.distributed): sharding, and a real
2-process gloo run of `python -m cervirad train-seg` compared with one process on the same global batch."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cervirad.segmentation.distributed import World, shard

from .conftest import FAST

# deterministic batches: whole 256 x 256 slices (no random crop) and no augmentation, so one process
# with batch 4 and two ranks with batch 2 see the same slices in every step
SAME_BATCHES = ["segmentation.plan=false", "segmentation.train_crop=null", "segmentation.max_train_slices_per_epoch=8",
                "segmentation.augmentation.rotation_deg=0", "segmentation.augmentation.flip_horizontal=false",
                "segmentation.augmentation.flip_vertical=false", "segmentation.augmentation.scale_min=1",
                "segmentation.augmentation.scale_max=1", "segmentation.augmentation.noise_sd=0",
                "segmentation.num_threads=1"]
# per-epoch losses, two ranks with batch 2 vs one process with batch 4 (measured: 1.8427 vs 1.8430, 1.7677 vs
# 1.7674, i.e. 0.02 %; one process with batch 2 differs by 2-4 %): BatchNorm normalises each rank's 2 slices
# (not 4) and the soft Dice is pooled per rank, so they are close but not bit-equal
LOSS_RTOL = 0.005

def test_shard_pads_by_wrapping_and_interleaves_like_distributed_sampler():
    order, forced = np.array([10, 11, 12, 13, 14]), np.array([False, True, False, True, False])
    r0, f0 = shard(order, World(0, 2), forced)
    r1, f1 = shard(order, World(1, 2), forced)
    assert r0.tolist() == [10, 12, 14] and r1.tolist() == [11, 13, 10]  # padded with the first slice
    assert f0.tolist() == [False, False, False] and f1.tolist() == [True, True, False]
    # global step j of 2 ranks with batch B = order[2jB:2(j+1)B], the batch one process with 2B draws
    b = 1
    assert sorted([r0[0:b][0], r1[0:b][0]]) == order[0:2].tolist()
    single, = shard(order, World(0, 1))
    assert single.tolist() == order.tolist()


def test_world_size_without_torchrun_is_one_line_error():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    res = subprocess.run([sys.executable, "-m", "cervirad", "validate", "--help"], capture_output=True, text=True,
                         env={**env, "WORLD_SIZE": "2"}, timeout=120)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("cervirad: error")]
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert "WORLD_SIZE=2 is set but RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not" in lines[0]
    assert "torchrun" in lines[0]


def _command(run, n_procs: int, batch_size: int, epochs: int) -> list[str]:
    sets = [f"--set={o}" for o in [*FAST, *SAME_BATCHES, f"segmentation.batch_size={batch_size}",
                                   f"segmentation.epochs={epochs}"]]
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_procs}"] if n_procs > 1 else []
    return [sys.executable, *launch, "-m", "cervirad", "train-seg", "--run-dir", str(run), *sets]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc): torchrun starts each rank in a session of its own, so
    killing torchrun's process group would leave the ranks running."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _kill_after_first_epoch(cmd: list[str], last_pt: Path, cwd: Path) -> None:
    """Start ``cmd`` and kill -9 torchrun and both ranks once rank 0 has written ``last.pt`` (end of epoch 1)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(), cwd=cwd)
    deadline = time.monotonic() + 600
    while not last_pt.is_file():
        assert proc.poll() is None, f"training ended before its first checkpoint: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "no last.pt after 10 minutes"
        time.sleep(0.05)
    for pid in [*_descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_resume_and_train_like_one_process_on_the_same_global_batch(tiny_run, tmp_path):
    """`torchrun --nproc_per_node 2 -m cervirad train-seg` (gloo): killed after epoch 1, rerun, it resumes from
    rank 0's last.pt; its per-epoch losses match one process with the same global batch; its model loads in a
    single process."""
    from cervirad.layout import LAST_PT, MODEL_PT, TRAIN_LOG, Layout
    from cervirad.segmentation.infer import load_model

    paths = {n: shutil.copytree(tiny_run.path, tmp_path / f"run_{n}") for n in (1, 2)}
    runs = {n: Layout(p) for n, p in paths.items()}
    seg = runs[2].segmentation_dir("crfe")
    staged = paths[2] / ".partial" / "train-seg" / "segmentation" / LAST_PT  # the stage writes there until done
    _kill_after_first_epoch(_command(paths[2], 2, 2, 3), staged, tmp_path)
    assert not runs[2].seg_metrics("crfe").is_file(), "the killed training must not have finished"
    for n, bs in ((2, 2), (1, 4)):
        res = subprocess.run(_command(paths[n], n, bs, 3), capture_output=True, text=True, env=_env(),
                             timeout=900, cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
    assert not list(seg.glob("*.tmp*")), "a half-written file was left behind"
    metrics = json.loads(runs[2].seg_metrics("crfe").read_text(encoding="utf-8"))
    assert metrics["resumed"] is True and metrics["epochs_run"] == 3
    model = load_model(seg / MODEL_PT, "cpu")  # rank 0's checkpoint loads in a single process
    assert model.info["arch"] == "crfe"
    dist_log, one_log = pd.read_csv(seg / TRAIN_LOG), pd.read_csv(runs[1].segmentation_dir("crfe") / TRAIN_LOG)
    assert dist_log.epoch.tolist() == one_log.epoch.tolist() == [1, 2, 3]
    np.testing.assert_allclose(dist_log.train_loss, one_log.train_loss, rtol=LOSS_RTOL)
    # validation: each rank scores its share of the same slices; the counts and losses are summed over ranks
    np.testing.assert_allclose(dist_log.val_loss, one_log.val_loss, rtol=LOSS_RTOL)
