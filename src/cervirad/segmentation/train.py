"""Training loop (SPEC §4): Adam, cosine annealing, early stopping on validation Dice, resume.

Optimiser and schedule are settings (:mod:`.optim`: ``optimizer: sgd`` is nnU-Net's SGD,
``scheduler: poly`` its decay); ``budget_minutes`` stops training after the epoch that spends the
budget. The network and the checkpoints it writes are :mod:`.checkpoint`'s.

One epoch = the slices chosen by :func:`data.epoch_slices`, augmented on the fly, in batches of
``batch_size``; Adam (lr ``lr``); the learning rate follows cosine annealing from ``lr`` to 0
over ``epochs`` epochs (``CosineAnnealingLR``, stepped once per epoch). After every epoch the
validation slices (:func:`data.val_slices`) are predicted and scored with the pooled Dice
2·ΣTP / (2·ΣTP + ΣFP + ΣFN) at ``threshold``. The best epoch (highest validation Dice) is
saved as ``model.pt``; every epoch also writes ``last.pt`` (weights, optimizer, scheduler,
early-stopping state, log, RNG) so ``--resume`` continues after the last finished epoch, even
after a kill -9. Training stops early when the validation Dice has not improved by at least
``early_stopping_min_delta`` for ``early_stopping_patience`` consecutive epochs.

Device: ``auto`` = CUDA when present (bf16 autocast), else CPU (float32). Seeds: torch is
seeded with ``run.seed`` before the model is built; the sampling/augmentation generator of
epoch e is ``numpy.random.default_rng([seed, e])`` so a resumed run draws the same batches.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config.schema import Config
from ..io import write_table
from ..layout import LAST_PT, MODEL_PT, TRAIN_LOG
from .checkpoint import build_network, checkpoint_header, read_checkpoint, read_checkpoint_any, save_checkpoint
from .data import (SliceSet, epoch_slices, n_batches, oversampled_epoch, same_shape_batches, training_batches,
                   val_slices)
from .distributed import all_max, all_sum, current as current_world, shard, wrap as wrap_distributed
from .infer import resolve_device
from .losses import SegLoss, segmentation_loss
from .optim import GRAD_CLIP, make_optimizer, make_scheduler, replanned_epochs

log = logging.getLogger(__name__)
LOG_COLUMNS = ["epoch", "lr", "train_loss", "val_loss", "val_dice", "best_val_dice", "seconds", "improved"]


@dataclass
class EarlyStopping:
    """Stop after ``patience`` epochs whose score did not beat the reference by ``min_delta``."""

    patience: int
    min_delta: float
    reference: float = -math.inf
    bad_epochs: int = 0
    history: list = field(default_factory=list)

    def step(self, score: float) -> bool:
        """Record one epoch's score; True when training should stop."""
        self.history.append(float(score))
        if score >= self.reference + self.min_delta:
            self.reference = float(score)
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"reference": self.reference, "bad_epochs": self.bad_epochs, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.reference, self.bad_epochs = float(state["reference"]), int(state["bad_epochs"])
        self.history = list(state["history"])


def pooled_dice(tp: float, n_pred: float, n_true: float) -> float:
    """2·ΣTP / (2·ΣTP + ΣFP + ΣFN) = 2·ΣTP / (Σpred + Σtrue) from pixel counts (1.0 when both are empty)."""
    den = n_pred + n_true
    return 1.0 if den == 0 else float(2 * tp / den)


@dataclass
class TrainResult:
    best_epoch: int
    best_val_dice: float
    epochs_run: int
    stopped_early: bool
    log: pd.DataFrame
    seconds: float
    train_slices_per_s: float


class Trainer:
    """Trains one architecture on a run's train/val slices; checkpoints into ``work_dir``."""

    def __init__(self, cfg: Config, arch: str, train: SliceSet, val: SliceSet, work_dir: Path, key: str,
                 progress: bool = True, budget_minutes: float | None = None, max_epochs: int | None = None,
                 init_weights: Path | None = None):
        self.cfg, self.s, self.arch = cfg, cfg.segmentation, arch
        k = self.s.context_slices
        self.train_set, self.val_set = train.with_context(k), val.with_context(k)
        # this model's share of the stage's budget (segmentation/budget.py budget_split); None = no limit
        self.budget_minutes = budget_minutes
        self.epochs = int(self.s.epochs)  # planned; re-planned after the first epoch under a budget
        self.max_epochs = int(max_epochs or self.s.epochs)  # the ceiling a re-plan may raise them to
        self.work_dir, self.key, self.progress = Path(work_dir), key, progress
        self.device = resolve_device(self.s.device)
        if self.s.num_threads:
            torch.set_num_threads(self.s.num_threads)
        self.world = current_world()  # torchrun: this rank (module docstring of .distributed)
        torch.manual_seed(cfg.run.seed)
        in_ch = self.train_set.in_channels
        self.net = build_network(cfg, arch, in_ch).to(self.device)
        if init_weights is not None:  # the self-supervised warm start (.pretrain)
            self.net.load_state_dict(read_checkpoint_any(init_weights)["state_dict"])
        self.model = wrap_distributed(self.net, self.device, self.world)  # the net itself for a single process
        if self.world.distributed:
            torch.manual_seed(cfg.run.seed + self.world.rank)
        self.optimizer = make_optimizer(self.net, self.s.optimizer, self.s.lr)
        self.scheduler = make_scheduler(self.optimizer, self.s.scheduler, lambda: self.epochs)
        self.stopper = EarlyStopping(self.s.early_stopping_patience, self.s.early_stopping_min_delta)
        sx, sy = cfg.preprocess.spacing[0], cfg.preprocess.spacing[1]
        self.loss_fn = SegLoss(self.s, pixel_area_mm2=sx * sy)
        self.rows: list[dict] = []
        self.start_epoch = 1
        self.best = -math.inf
        self.val_idx = val_slices(val.rows, self.s, cfg.run.seed)

    # ---------------------------------------------------------------- checkpoints
    @property
    def last_path(self) -> Path:
        return self.work_dir / LAST_PT

    @property
    def best_path(self) -> Path:
        return self.work_dir / MODEL_PT

    def header(self) -> dict:
        return checkpoint_header(self.cfg, self.arch, self.train_set.in_channels)

    def save_last(self, epoch: int) -> None:
        if not self.world.main:
            return
        save_checkpoint({**self.header(), "key": self.key, "epoch": epoch, "best_val_dice": self.best,
                         "state_dict": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                         "scheduler": self.scheduler.state_dict() if self.scheduler else {},
                         "early_stopping": self.stopper.state_dict(), "log": list(self.rows), "epochs": self.epochs,
                         "torch_rng": torch.get_rng_state()}, self.last_path)

    def resume(self) -> bool:
        """Restore from ``last.pt`` when present and trained with the same settings and data (else
        start over); True if training continues from it."""
        if not self.last_path.is_file():
            return False
        ck = read_checkpoint(self.last_path)
        if ck.get("key") != self.key or ck["arch"] != self.arch:
            log.warning("train-seg %s: the interrupted checkpoint %s was trained with other settings or data; "
                        "starting over", self.arch, self.last_path)
            if self.world.main:
                for f in (LAST_PT, MODEL_PT, TRAIN_LOG):
                    (self.work_dir / f).unlink(missing_ok=True)
            return False
        self.net.load_state_dict(ck["state_dict"])
        self.optimizer.load_state_dict(ck["optimizer"])
        if self.scheduler and ck["scheduler"]:
            self.scheduler.load_state_dict(ck["scheduler"])
        self.stopper.load_state_dict(ck["early_stopping"])
        torch.set_rng_state(ck["torch_rng"])
        self.rows = list(ck["log"])
        self.best = float(ck["best_val_dice"])
        self.start_epoch = int(ck["epoch"]) + 1
        self.epochs = int(ck.get("epochs", self.epochs))
        log.info("train-seg %s: resuming after epoch %d (best val Dice %.4f)", self.arch, ck["epoch"], self.best)
        return True

    # ---------------------------------------------------------------- loop
    def fit(self) -> TrainResult:
        t_start = time.perf_counter()
        n_seen, t_train = 0, 0.0
        stopped = bool(self.rows) and self.stopper.bad_epochs >= self.stopper.patience
        budget_s = self.budget_minutes * 60.0 if self.budget_minutes else math.inf
        spent = sum(r["seconds"] for r in self.rows)  # a resumed training counts its earlier epochs
        epoch = self.start_epoch - 1
        while epoch < self.epochs:
            epoch += 1
            if stopped:
                break
            if spent >= budget_s:
                log.info("train-seg %s: time budget of %.1f min spent after epoch %d; stopping", self.arch,
                         self.budget_minutes, epoch - 1)
                stopped = True
                break
            t0 = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_loss, n = self._train_epoch(epoch)
            t_train += time.perf_counter() - t0
            n_seen += n
            val_loss, val_dice = self._validate()
            if self.scheduler:
                self.scheduler.step()
            improved = val_dice > self.best
            if improved:
                self.best = val_dice
                if self.world.main:
                    save_checkpoint({**self.header(), "epoch": epoch, "val_dice": val_dice,
                                     "state_dict": self.net.state_dict()}, self.best_path)
            stopped = self.stopper.step(val_dice)
            seconds = all_max(time.perf_counter() - t0, self.world)  # every rank decides the budget alike
            self.rows.append({"epoch": epoch, "lr": lr, "train_loss": train_loss, "val_loss": val_loss,
                              "val_dice": val_dice, "best_val_dice": self.best,
                              "seconds": round(seconds, 2), "improved": improved})
            spent += self.rows[-1]["seconds"]
            if epoch == 1 and budget_s < math.inf:
                self.replan(epoch, spent, seconds, budget_s)
            self.save_last(epoch)
            if not self.world.main:
                continue
            write_table(pd.DataFrame(self.rows, columns=LOG_COLUMNS), self.work_dir / TRAIN_LOG)
            log.info("train-seg %s epoch %d: loss %.4f, val Dice %.4f%s", self.arch, epoch, train_loss, val_dice,
                     " (best)" if improved else "")
        df = pd.DataFrame(self.rows, columns=LOG_COLUMNS)
        best_row = df.loc[df.val_dice.idxmax()] if len(df) else None
        return TrainResult(best_epoch=int(best_row.epoch) if best_row is not None else 0,
                           best_val_dice=float(self.best), epochs_run=len(df),
                           stopped_early=stopped and len(df) < self.epochs, log=df,
                           seconds=time.perf_counter() - t_start,
                           train_slices_per_s=n_seen / t_train if t_train else float("nan"))

    def replan(self, done: int, spent_s: float, epoch_s: float, budget_s: float) -> None:
        """After the first real epoch: the epochs that the rest of this model's budget affords at the
        measured pace (the plan's probe runs one step and under contention misjudges it); the learning-rate
        schedule follows the new length. Every rank decides alike (``epoch_s`` is all-reduced)."""
        new = replanned_epochs(done, spent_s, epoch_s, budget_s, self.max_epochs)
        if new != self.epochs:
            log.info("train-seg %s: re-planned after epoch %d (%.1f s measured): %d epochs instead of %d to fill "
                     "the %.1f min budget", self.arch, done, epoch_s, new, self.epochs, budget_s / 60.0)
            self.epochs = new

    def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray | None, np.random.Generator]:
        """(row indices, forced, augmentation generator) of this rank in ``epoch``. Under torchrun every
        rank draws the same order for the global batch (``batch_size`` x ranks) and takes its shard."""
        rng = np.random.default_rng([self.cfg.run.seed, epoch])
        w = self.world
        forced = None
        if self.s.foreground_oversampling is None:
            order = epoch_slices(self.train_set.rows, self.s, rng)
        else:
            global_batch = replace(self.s, batch_size=self.s.batch_size * w.size)
            order, forced = oversampled_epoch(self.train_set.rows, global_batch, rng)
        if w.distributed:
            order, forced = shard(order, w, forced)
            rng = np.random.default_rng([self.cfg.run.seed, epoch, w.rank])
        return order, forced, rng

    def _train_epoch(self, epoch: int) -> tuple[float, int]:
        from tqdm.auto import tqdm

        from ..progress import bar_enabled  # no bar (carriage returns) in a log file: one log line per epoch

        order, forced, rng = self._epoch_order(epoch)
        self.model.train()
        total, count = 0.0, 0
        patch = self.s.train_crop or self.cfg.preprocess.slice_size
        bar = tqdm(training_batches(self.train_set, order, self.s, rng, patch, forced),
                   total=n_batches(len(order), self.s.batch_size),
                   desc=f"{self.arch} epoch {epoch}/{self.epochs}", unit="batch", leave=False,
                   disable=not (self.progress and bar_enabled()))
        use_bf16 = self.device.type == "cuda"
        for imgs, masks in bar:
            x = torch.from_numpy(imgs).to(self.device, non_blocking=True)
            y = torch.from_numpy(masks).to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                out = self.model(x)
            loss = self.loss_fn(out, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.s.optimizer == "sgd":
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
            self.optimizer.step()
            total += float(loss.detach()) * len(x)
            count += len(x)
            bar.set_postfix(loss=f"{total / count:.4f}")
        bar.close()
        total, count = all_sum([total, count], self.world)  # the global batch's loss, all ranks' slices
        return total / max(1, count), int(count)

    @torch.no_grad()
    def _validate(self) -> tuple[float, float]:
        """(mean loss, pooled Dice) over the validation slices."""
        self.net.eval()
        bs = self.s.infer_batch_size
        use_bf16 = self.device.type == "cuda"
        idx = self.val_idx[self.world.rank::self.world.size]  # under torchrun each rank scores a share
        loss_sum, tp, n_pred, n_true = 0.0, 0, 0, 0
        for batch in same_shape_batches(self.val_set, idx, bs):
            pairs = [self.val_set.get(int(i)) for i in batch]
            x = torch.from_numpy(np.stack([p[0] for p in pairs])).to(self.device)
            y = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.float32)).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = self.net(x)
            loss_sum += float(segmentation_loss(logits, y, self.s.dice_weight, self.s.bce_weight)) * len(x)
            p, t = (torch.sigmoid(logits.float())[:, 0] > self.s.threshold), y > 0.5
            tp += int((p & t).sum())
            n_pred, n_true = n_pred + int(p.sum()), n_true + int(t.sum())
        loss_sum, tp, n_pred, n_true = all_sum([loss_sum, tp, n_pred, n_true], self.world)
        if not len(self.val_idx):
            return float("nan"), float("nan")
        return loss_sum / len(self.val_idx), pooled_dice(tp, n_pred, n_true)


@dataclass(frozen=True)
class TrainJob:
    """One training of the stage, as every rank builds it. ``train_ids``/``val_ids`` None: the run's
    train and val splits; else those patients of train+val (a fold)."""

    cfg: Config
    arch: str
    run_path: Path
    work: Path
    key: str
    train_ids: tuple | None = None
    val_ids: tuple | None = None
    budget_minutes: float | None = None  # this model's share of the stage budget (plan.budget_split)
    max_epochs: int | None = None  # the config's epochs: the ceiling of a re-plan
    pretrain_path: Path | None = None  # warm-start weights (.pretrain), shared by the folds of a network

    def trainer(self, progress: bool, pools: dict | None = None) -> "Trainer":
        """The job's Trainer. ``pools``: a dict kept across the jobs of one stage, so the folds of an
        ensemble read the run's train+val slices once (keyed by run folder)."""
        from .data import load_slice_set
        from .folds import merge, subset

        if self.train_ids is None:
            train, val = load_slice_set(self.run_path, "train"), load_slice_set(self.run_path, "val")
        else:
            pools = {} if pools is None else pools
            if self.run_path not in pools:
                pools[self.run_path] = merge(load_slice_set(self.run_path, "train"),
                                             load_slice_set(self.run_path, "val"))
            pool = pools[self.run_path]
            train, val = subset(pool, list(self.train_ids)), subset(pool, list(self.val_ids))
        init = self.pretrain_path if self.pretrain_path is not None and Path(self.pretrain_path).is_file() else None
        return Trainer(self.cfg, self.arch, train, val, self.work, self.key, progress, self.budget_minutes,
                       self.max_epochs, init)


def plot_curves(df: pd.DataFrame, path: Path, title: str) -> None:
    """Loss (train, val) and validation Dice per epoch."""
    from ..plotting import pyplot, save_figure

    plt = pyplot()

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(df.epoch, df.train_loss, "o-", label="train")
    a.plot(df.epoch, df.val_loss, "s-", label="validation")
    a.set(xlabel="epoch", ylabel="loss (Dice + BCE)", title="loss")
    a.legend()
    b.plot(df.epoch, df.val_dice, "o-", color="C2")
    b.set(xlabel="epoch", ylabel="Dice", title="validation Dice", ylim=(0, 1))
    fig.suptitle(title)
    save_figure(fig, path)


__all__ = ["EarlyStopping", "Trainer", "TrainJob", "TrainResult", "pooled_dice", "plot_curves"]
