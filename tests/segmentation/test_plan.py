"""The training plan: nnU-Net's rules on fingerprints with known answers, budget -> epochs, the paper preset."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from cervirad.config import STRIDE, Config, load_config, with_overrides
from cervirad.errors import ConfigError
from cervirad.segmentation import budget as B, plan as P
from cervirad.stages import stage_inputs
from cervirad.target_spacing import cohort_geometry, planned_spacing, target_spacing

REPO = Path(__file__).resolve().parents[2]
IDENTITY = [1, 0, 0, 0, 1, 0, 0, 0, 1]


def _fp(spacings, sizes, directions=None, seq="t2w"):
    pts = [{"id": f"P{i}", seq: {"spacing": list(sp), "size": list(sz),
                                 **({"direction": directions[i]} if directions else {})}}
           for i, (sp, sz) in enumerate(zip(spacings, sizes))]
    return {"n_patients": len(pts), "n_with_mask": len(pts), "patients": pts}


def test_isotropic_target_is_the_median():
    sp = np.array([[1.0, 1.0, 1.0], [1.2, 1.2, 1.2], [0.8, 0.8, 0.8]])
    assert target_spacing(sp, np.full((3, 3), 200.0)) == ([1.0, 1.0, 1.0], "median spacing")


def test_anisotropic_thick_axis_takes_its_10th_percentile():
    z = [3.0, 4.0, 5.0, 5.0, 6.0]  # median 5 > 3 x 0.5 and 30 slices x 3 < 512 px: nnU-Net's anisotropic case
    sp = np.array([[0.5, 0.5, t] for t in z])
    target, why = target_spacing(sp, np.array([[512, 512, 30]] * 5, float))
    assert target == [0.5, 0.5, 3.4] and "10th percentile" in why  # np.percentile(z, 10) = 3.4


def test_anisotropic_spacing_with_many_slices_keeps_the_median():
    sp = np.array([[0.5, 0.5, t] for t in (3.0, 4.0, 5.0, 5.0, 6.0)])
    assert target_spacing(sp, np.array([[512, 512, 400]] * 5, float))[0] == [0.5, 0.5, 5.0]


def test_directions_map_image_axes_to_slices():
    """A volume stored (z, x, y)-first is read in the patient's axes, as preprocess's LPS reordering does."""
    d = [0, 1, 0, 0, 0, 1, 1, 0, 0]  # image axis 0 -> patient z, 1 -> x, 2 -> y
    sp, sz = cohort_geometry(_fp([(4.0, 0.7, 0.8)], [(24, 256, 200)], [d]), "t2w", "axial")
    assert sp.tolist() == [[0.7, 0.8, 4.0]] and sz.tolist() == [[256, 200, 24]]
    sp, _ = cohort_geometry(_fp([(0.7, 0.8, 4.0)], [(256, 200, 24)], [IDENTITY]), "t2w", "coronal")
    assert sp.tolist() == [[0.7, 4.0, 0.8]]  # coronal slices: column x, row z, thickness y


@pytest.mark.parametrize("extent_mm, spacing, patch", [
    (20.0, 1.0, P.MIN_PATCH),     # tiny: 20 px -> the smallest patch
    (150.0, 1.0, 160),            # 150 px -> next multiple of the stride
    (512.0, 0.5, P.MAX_PATCH),    # huge: 1024 px -> capped
])
def test_patch_from_median_in_plane_shape(extent_mm, spacing, patch):
    n = extent_mm / spacing
    sp = np.array([[spacing, spacing, 3.0]] * 3)
    side, _ = P.patch_side(sp, np.array([[n, n * 0.8, 30]] * 3), [spacing, spacing, 3.0])
    assert side == patch and side % STRIDE == 0


def test_batch_from_memory_and_dataset_share():
    per = P.bytes_per_sample(128)
    assert per == 128 * 128 * P.BYTES_PER_PIXEL + 3 * (16 * 16) ** 2 * 4
    big = 1e12  # the 5 % rule does not bind
    assert P.plan_batch(128, "cuda", int(5 * per / P.MEMORY_FRACTION["cuda"]) + 1, big)[0] == 5
    assert P.plan_batch(128, "cuda", 1 << 40, big)[0] == P.MAX_BATCH
    assert P.plan_batch(128, "cpu", 1 << 40, big)[0] == P.MAX_BATCH_CPU
    assert P.plan_batch(128, "cuda", 1 << 40, 0.05 * 0 + 128 * 128 * 60)[0] == 3  # 5 % of 60 patches
    assert P.plan_batch(256, "cpu", 1 << 20, big)[0] == P.MIN_BATCH  # 1 MiB: nothing fits, floor of 2


def test_budget_to_epochs():
    s = B.plan_schedule(10, 0.1, n_train_slices=300, n_val_slices=200, val_pixels_ratio=1.0, batch=8, max_epochs=100)
    # an epoch: 300 samples x 0.1 s = 30 s + 200 val slices x 0.1/3 s = 6.7 s -> 600 s // 36.7 s = 16
    assert s["segmentation.max_train_slices_per_epoch"][0] == 300 and s["segmentation.max_val_slices"][0] == 200
    assert s["segmentation.epochs"][0] == 16
    assert B.plan_schedule(10, 0.1, 300, 200, 1.0, 8, max_epochs=5)["segmentation.epochs"][0] == 5
    long = B.plan_schedule(1, 0.1, 10_000, 10_000, 1.0, 8, 100)  # an epoch is at most 1/10 of the budget
    assert long["segmentation.max_train_slices_per_epoch"][0] == 60
    assert long["segmentation.max_val_slices"][0] == 45  # 25 % of 6 s = 1.5 s at 1/30 s per slice
    assert long["segmentation.epochs"][0] == 8  # 60 s // 7.5 s


def test_small_cohort_asks_for_folds():
    assert P.plan_folds(15)[0] == 5 and "cross-validation" in P.plan_folds(15)[1]
    assert P.plan_folds(40)[0] == 1


def test_make_plan_on_a_small_anisotropic_cohort():
    fp = _fp([(0.98, 0.98, 3.27)] * 17 + [(1.17, 1.17, 3.27)], [(140, 140, 50)] * 18, [IDENTITY] * 18, "t1w")
    cfg = with_overrides(Config(), ["data.sequences=[t1w]", "segmentation.input_sequences=[t1w]",
                                   "features.sequences=[t1w]", "segmentation.budget_minutes=600"])
    plan = P.make_plan(fp, cfg, "cpu", memory=8 << 30, s_per_sample=0.01)  # enough steps for nnU-Net's SGD
    d = {k: v["value"] for k, v in plan["decisions"].items()}
    assert d["preprocess.spacing"] == [0.98, 0.98, 3.27]
    assert d["segmentation.train_crop"] == 144  # 140 px -> 144
    assert d["segmentation.optimizer"] == "sgd" and d["segmentation.scheduler"] == "poly" and d["segmentation.lr"] == 1e-2
    assert d["segmentation.deep_supervision"] is True and d["segmentation.foreground_oversampling"] == 0.33
    assert d["segmentation.folds"] == 5 and plan["cohort"]["development_patients"] == 15
    assert 1 <= d["segmentation.epochs"] <= 100 and plan["normalization"] == {"t1w": "zscore"}
    cfg2 = P.apply_decisions(cfg, plan["decisions"])
    assert cfg2.segmentation.batch_size == d["segmentation.batch_size"] and cfg2.preprocess.spacing == (0.98, 0.98, 3.27)


def test_config_settings_win_over_the_plan():
    fp = _fp([(0.7, 0.7, 4.0)] * 50, [(256, 256, 24)] * 50)
    cfg = with_overrides(Config(), ["segmentation.batch_size=3", "segmentation.plan_keep=[segmentation.folds, "
                                   "segmentation.optimizer]", "preprocess.spacing=[1.4, 1.4, 4.0]"])
    dec = P.make_plan(fp, cfg, "cpu", memory=8 << 30)["decisions"]
    assert dec["segmentation.batch_size"] == {**dec["segmentation.batch_size"], "value": 3, "source": "config"}
    assert dec["segmentation.optimizer"]["value"] == "adam" and dec["segmentation.optimizer"]["source"] == "config"
    assert dec["segmentation.lr"]["value"] == 1e-3  # Adam keeps the paper's learning rate
    assert dec["preprocess.spacing"]["value"] == [1.4, 1.4, 4.0]
    assert dec["segmentation.scheduler"]["source"] == "plan"
    assert "segmentation.epochs" not in dec  # no budget: no probe, the config's epochs stand
    assert planned_spacing(cfg, fp)[0] == (1.4, 1.4, 4.0)
    with pytest.raises(ConfigError, match="plan_keep"):
        P.check_settings(with_overrides(Config(), ["segmentation.plan_keep=[segmentation.lstm_hidden]"]))


def test_paper_preset_keeps_its_fixed_recipe(tmp_path):
    from cervirad.rundir import RunDir
    from cervirad.stages import STAGES

    cfg = load_config(REPO / "configs" / "paper.yaml")
    s = cfg.segmentation
    assert not s.plan and s.optimizer == "adam" and s.scheduler == "cosine" and s.lr == 1e-3
    assert s.foreground_oversampling is None and s.budget_minutes is None and not s.deep_supervision
    assert all(getattr(s.augmentation, f"{k}_p") == 0 for k in ("elastic", "gamma", "brightness", "contrast",
                                                                 "lowres", "blur"))
    fp = _fp([(0.5, 0.5, 3.0)] * 5, [(512, 512, 30)] * 5)
    assert planned_spacing(cfg, fp)[0] == (0.7, 0.7, 4.0)
    run = RunDir(tmp_path / "run")
    run.fingerprint.write_text(__import__("json").dumps(fp))
    with run.stage("plan") as st:
        plan = P.plan_stage(cfg, stage_inputs("plan", run.path), st)
    assert plan["enabled"] is False and plan["decisions"] == {}
    assert P.planned_config(cfg, run) == cfg
    assert "plan" in next(x for x in STAGES if x.name == "train-seg").reads  # the plan is in train-seg's key


def test_plan_stage_round_trip(tmp_path):
    """plan.yaml written by the stage is what train-seg applies."""
    from cervirad.rundir import RunDir

    cfg = load_config(REPO / "configs" / "demo.yaml")
    fp = _fp([(0.7, 0.7, 4.0)] * 20, [(256, 256, 24)] * 20)
    run = RunDir(tmp_path / "run")
    run.fingerprint.write_text(__import__("json").dumps(fp))
    with run.stage("plan") as st:
        P.plan_stage(with_overrides(cfg, ["segmentation.budget_minutes=null"]), stage_inputs("plan", run.path), st)
    doc = yaml.safe_load(run.plan.read_text(encoding="utf-8"))
    assert doc["enabled"] and doc["folds"] == 5  # 17 development patients
    got = P.planned_config(with_overrides(cfg, ["segmentation.budget_minutes=null"]), run)
    assert got.segmentation.train_crop == cfg.segmentation.train_crop == 96  # demo.yaml sets it: kept
    # demo.yaml's 6 epochs x 200 slices are < 1000 optimiser steps: Adam + cosine, not nnU-Net's SGD
    assert got.segmentation.optimizer == "adam" and got.segmentation.scheduler == "cosine"
    assert got.segmentation.folds == 5 and got.segmentation.augmentation.elastic_p == 0.2
    long = with_overrides(cfg, ["segmentation.budget_minutes=null", "segmentation.epochs=100"])
    with run.stage("plan", replace=(run.plan.relative_to(run.path),)) as st:
        P.plan_stage(long, stage_inputs("plan", run.path), st)
    got = P.planned_config(long, run)
    assert got.segmentation.optimizer == "sgd" and got.segmentation.scheduler == "poly"  # 100 x 200 slices: enough


def test_sgd_and_poly_are_nnunets():
    import torch

    from cervirad.segmentation.optim import make_optimizer, make_scheduler

    net = torch.nn.Linear(2, 1)
    opt = make_optimizer(net, "sgd", 0.01)
    g = opt.param_groups[0]
    assert g["momentum"] == 0.99 and g["nesterov"] and g["weight_decay"] == 3e-5
    sch = make_scheduler(opt, "poly", 10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    assert np.allclose(lrs, [0.01 * (1 - e / 10) ** 0.9 for e in range(10)])
    assert make_scheduler(opt, "none", 10) is None
    assert isinstance(make_optimizer(net, "adam", 1e-3), torch.optim.Adam)


def test_training_stops_when_the_budget_is_spent(seg_run, tmp_path):
    from cervirad.segmentation.data import load_slice_set
    from cervirad.segmentation.train import Trainer

    cfg, run = seg_run
    cfg = with_overrides(cfg, ["segmentation.epochs=4", "segmentation.budget_minutes=0.0001",
                              "segmentation.max_val_slices=2", "segmentation.max_train_slices_per_epoch=4",
                              "segmentation.optimizer=sgd", "segmentation.scheduler=poly",
                              "segmentation.foreground_oversampling=0.5", "segmentation.augmentation.elastic_p=0.5"])
    trainer = Trainer(cfg, "unet", load_slice_set(run.path, "train"), load_slice_set(run.path, "val"), tmp_path,
                      "key", progress=False, budget_minutes=0.0001)
    res = trainer.fit()  # the first epoch spends the budget: the re-plan ends the training there
    assert res.epochs_run == 1 and trainer.epochs == 1 and (tmp_path / "model.pt").is_file()


def test_a_small_budget_plans_adam_instead_of_sgd():
    fp = _fp([(0.7, 0.7, 4.0)] * 50, [(256, 256, 24)] * 50)
    cfg = with_overrides(Config(), ["segmentation.budget_minutes=20"])  # 4 min of it is scoring
    few = {k: v["value"] for k, v in P.make_plan(fp, cfg, "cpu", 8 << 30, s_per_sample=0.5)["decisions"].items()}
    assert (few["segmentation.optimizer"], few["segmentation.lr"], few["segmentation.scheduler"]) == \
        ("adam", 1e-3, "cosine")
    many = {k: v["value"] for k, v in P.make_plan(fp, with_overrides(cfg, ["segmentation.budget_minutes=600"]), "cpu",
                                                   8 << 30, s_per_sample=0.01)["decisions"].items()}
    steps = many["segmentation.epochs"] * -(-many["segmentation.max_train_slices_per_epoch"]
                                            // many["segmentation.batch_size"])
    assert steps >= P.SGD_MIN_STEPS and many["segmentation.optimizer"] == "sgd" and many["segmentation.lr"] == 1e-2


def test_probe_times_a_training_step():
    cfg = with_overrides(Config(), ["segmentation.lstm_hidden=8", "segmentation.deep_supervision=true",
                                   "segmentation.augmentation.elastic_p=1.0"])
    s = B.probe_seconds_per_sample(cfg, "crfe", 1, 32, "cpu")
    assert 0 < s < 60


def test_plan_reads_the_development_patients_and_a_fixed_memory_budget(monkeypatch):
    """Issue 23 item 8: test patients never shape the plan; the batch does not follow free memory."""
    from cervirad.target_spacing import development_fingerprint

    fp = _fp([[1.0, 1.0, 3.0]] * 4 + [[0.4, 0.4, 1.0]], [[200, 200, 30]] * 4 + [[600, 600, 90]])  # P4: a test outlier
    cfg = Config()
    dev = development_fingerprint(fp, ["P0", "P1", "P2", "P3"])
    assert len(dev["patients"]) == 4 and dev["n_patients"] == 5 and "development" in dev["planned_from"]
    assert planned_spacing(cfg, fp, ["P0", "P1", "P2", "P3"])[0] == (1.0, 1.0, 3.0)
    assert development_fingerprint(fp, []) is fp
    monkeypatch.setattr(P, "available_memory", lambda device: (_ for _ in ()).throw(AssertionError("free memory")))
    a, b = P.make_plan(dev, cfg, "cpu"), P.make_plan(dev, cfg, "cpu")
    assert a["decisions"]["segmentation.batch_size"] == b["decisions"]["segmentation.batch_size"]
    assert a["resources"]["memory_gib"] == P.MEMORY_BUDGET["cpu"] / 2**30
    assert a["cohort"]["planned_from"].startswith("4 development patients")
