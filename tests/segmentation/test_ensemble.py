"""K-fold ensembles (segmentation/folds.py), their checkpoint format, old checkpoints, the matched U-Net."""
import json

import numpy as np
import pytest
import torch

from cervirad.config import with_overrides
from cervirad.errors import InputError
from cervirad.pipeline import run_stages
from cervirad.segmentation.checkpoint import FORMAT, checkpoint_header, read_checkpoint, save_checkpoint
from cervirad.segmentation.folds import ensemble_checkpoint, fold_parts, run_fold_parts
from cervirad.segmentation.infer import LoadedModel, load_model, predict_slices
from cervirad.segmentation.model import (CRFE, UNet, build_model, count_parameters, matched_unet_width,
                                         optimise_for_inference, predict_proba)
from cervirad.segmentation.train import Trainer


def _unet(seed):
    torch.manual_seed(seed)
    net = build_model("unet", 1, unet_width=0.25)
    for p in net.parameters():  # BatchNorm starts at identity: perturb everything so members differ clearly
        p.data.add_(0.05 * torch.randn_like(p))
    return net


def test_fold_ensemble_probabilities_are_the_mean_of_its_members():
    nets = [optimise_for_inference(_unet(s)) for s in (0, 1, 2)]
    info = {"in_channels": 1, "input_sequences": ["t2w"]}
    ens = LoadedModel(nets[0], info, torch.device("cpu"), nets)
    x = torch.randn(4, 1, 32, 48)
    members = [predict_proba(n, x) for n in nets]
    torch.testing.assert_close(ens.proba(x), sum(members) / 3, atol=1e-6, rtol=0)
    assert (members[0] - members[1]).abs().max() > 1e-3


def test_ensemble_checkpoint_round_trip(tmp_path, tiny_cfg):
    cfg = with_overrides(tiny_cfg, ["segmentation.model=unet", "segmentation.unet_width=0.25",
                                   "segmentation.tta_mirror=false"])
    paths = []
    for i in range(2):
        p = tmp_path / f"fold_{i}" / "model.pt"
        save_checkpoint({**checkpoint_header(cfg, "unet", 1), "epoch": i + 1, "val_dice": 0.5,
                         "state_dict": _unet(i).state_dict()}, p)
        paths.append(p)
    ens_path = tmp_path / "model.pt"
    save_checkpoint(ensemble_checkpoint(paths, [["A", "B"], ["C"]], read_checkpoint), ens_path)
    ens = load_model(ens_path, "cpu")
    assert len(ens.nets) == 2 and ens.info["n_folds"] == 2
    assert [f["val_patients"] for f in ens.info["folds"]] == [["A", "B"], ["C"]]
    assert all("state_dict" not in f for f in ens.info["folds"])
    images = np.random.default_rng(0).normal(size=(3, 1, 32, 32)).astype(np.float32)
    singles = [predict_slices(load_model(p, "cpu"), images, 2)[0] for p in paths]
    np.testing.assert_allclose(predict_slices(ens, images, 2)[0], (singles[0] + singles[1]) / 2, atol=1e-6)


def test_old_single_model_checkpoint_still_loads(tmp_path, tiny_cfg):
    """A model.pt as written before folds, U-Net widths, recurrence and train_patch existed."""
    torch.manual_seed(0)
    net = UNet(1)  # the old U-Net: width 1.0
    old_cfg = tiny_cfg.to_dict()
    for key in ("tta_mirror", "sliding_window", "folds", "unet_width", "recurrence"):
        old_cfg["segmentation"].pop(key, None)
    header = {k: v for k, v in checkpoint_header(tiny_cfg, "unet", 1).items()
              if k not in ("unet_width", "train_patch", "recurrence")}
    path = tmp_path / "model.pt"
    torch.save({**header, "config": old_cfg, "format": FORMAT, "epoch": 3, "val_dice": 0.4,
                "state_dict": net.state_dict()}, path)
    model = load_model(path, "cpu")
    assert len(model.nets) == 1 and not model.tta_mirror and model.sliding_window == "never"
    assert model.train_patch == tiny_cfg.segmentation.train_crop  # read from the stored config
    assert count_parameters(model.net) == count_parameters(optimise_for_inference(UNet(1)))  # width 1.0
    images = np.random.default_rng(1).normal(size=(2, 1, 32, 32)).astype(np.float32)
    expected = predict_proba(optimise_for_inference(net), torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(predict_slices(model, images, 2)[0], expected, atol=1e-5)


def test_test_patients_are_in_no_fold():
    train_val = [f"P{i:02d}" for i in range(11)]
    parts = fold_parts(train_val, ["T1", "T2"], 3, seed=0)
    assert sorted(p for part in parts for p in part) == sorted(train_val)  # disjoint and complete
    assert sorted(len(p) for p in parts) == [3, 4, 4]
    assert parts == fold_parts(list(reversed(train_val)), ["T1", "T2"], 3, seed=0)  # order-independent, seeded
    assert not {"T1", "T2"} & {p for part in parts for p in part}
    with pytest.raises(InputError, match="must be in no fold"):
        fold_parts(train_val + ["T1"], ["T1", "T2"], 3, seed=0)
    with pytest.raises(InputError, match="segmentation.folds is 12 but only 11"):
        fold_parts(train_val, [], 12, seed=0)


def test_run_folds_never_hold_the_runs_test_patients(tiny_run):
    splits = json.loads(tiny_run.splits.read_text(encoding="utf-8"))
    patients, parts = run_fold_parts(tiny_run.path, 2, 42)
    assert sorted(patients) == sorted(splits["train"] + splits["val"])
    assert not set(splits["test"]) & {p for part in parts for p in part}


@pytest.mark.parametrize("in_channels,hidden,recurrence", [(1, 256, "rows"), (3, 256, "rows"), (1, 256, "rows+cols"),
                                                           (1, 64, "rows")])
def test_matched_unet_parameter_count_is_within_10_percent_of_crfe(in_channels, hidden, recurrence):
    crfe = count_parameters(CRFE(in_channels, hidden, recurrence=recurrence))
    width = matched_unet_width(in_channels, hidden, recurrence)
    unet = count_parameters(build_model("unet", in_channels, unet_width=width))
    assert abs(unet - crfe) / crfe <= 0.10, (unet, crfe, width)
    if (hidden, recurrence) == (256, "rows"):
        assert count_parameters(UNet(in_channels)) < 0.6 * crfe  # the width-1.0 U-Net was half the size


@pytest.mark.slow
def test_two_fold_training_end_to_end_and_resume_in_the_fold(seg_run, monkeypatch):
    cfg, run = seg_run
    cfg = with_overrides(cfg, ["segmentation.folds=2", "segmentation.epochs=1"])
    real = Trainer._train_epoch
    calls = []

    def crash_in_fold_1(self, epoch):
        calls.append(self.work_dir.name)
        if self.work_dir.name == "fold_1" and calls.count("fold_1") == 1:
            raise RuntimeError("simulated kill")
        return real(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", crash_in_fold_1)
    with pytest.raises(RuntimeError, match="simulated kill"):
        run_stages(cfg, run, ["train-seg"])
    assert (run.path / ".partial" / "train-seg" / "segmentation" / "fold_0" / "model.pt").is_file()
    run_stages(cfg, run, ["train-seg"])
    assert calls == ["fold_0", "fold_1", "fold_1"]  # fold 0 was not trained again
    seg = run.path / "segmentation"
    m = json.loads((seg / "metrics.json").read_text(encoding="utf-8"))
    splits = json.loads(run.splits.read_text(encoding="utf-8"))
    assert m["n_folds"] == 2 and len(m["per_fold"]) == 2 and m["resumed"] is True
    assert m["inference"] == {"tta_mirror": False, "sliding_window": "never", "train_patch": 64, "n_models": 2,
                              "context_slices": 2, "lesions": "one"}  # plan: 2 neighbours in 8 mm; demo.yaml: one
    held = [p for f in m["per_fold"] for p in f["val_patients"]]
    assert sorted(held) == sorted(splits["train"] + splits["val"]) and not set(held) & set(splits["test"])
    assert set(m["single_fold_test"]["dice"]) == {"value", "ci_low", "ci_high"}
    assert m["postprocessing"]["n_val_patients"] == len(held)  # chosen on the pooled out-of-fold predictions
    fold0 = json.loads((seg / "fold_0" / "metrics.json").read_text(encoding="utf-8"))
    assert fold0["dice"] == m["single_fold_test"]["dice"] and fold0["n_patients"] == len(splits["test"])
    ck = torch.load(seg / "model.pt", weights_only=True)
    assert ck["n_folds"] == 2 and [f["fold"] for f in ck["folds"]] == [0, 1]
    assert (seg / "fold_curves.png").is_file() and (seg / "fold_1" / "curves.png").is_file()
    assert sorted(p.name for p in (run.path / "masks").iterdir()) == sorted(f"{p}.nii.gz" for p in splits["test"])


def test_report_section_shows_plan_folds_and_ensemble_vs_single(tmp_path, tiny_cfg):
    import pandas as pd
    import yaml

    from cervirad.report.segmentation_recipe import recipe_sections
    from cervirad.files import write_json
    from cervirad.rundir import RunDir
    from cervirad.segmentation.folds import plot_fold_curves

    run = RunDir(tmp_path / "run")
    assert recipe_sections(run) == []  # nothing trained, no plan: no section
    ci = lambda v: {"value": v, "ci_low": v - 0.1, "ci_high": v + 0.1}  # noqa: E731
    per_fold = [{"fold": i, "n_train_patients": 5, "val_patients": ["A", "B"] if i else ["C"], "best_epoch": 2 + i,
                 "best_val_dice": 0.5 + i / 10, "epochs_run": 4, "train_seconds": 9.0} for i in range(2)]
    write_json(run.seg_metrics(), {"n_patients": 2, "n_folds": 2, "dice": ci(0.71), "hd95_mm": ci(5.0),
                                   "detection_rate": ci(1.0), "per_fold": per_fold,
                                   "single_fold_test": {"dice": ci(0.64), "hd95_mm": ci(7.0),
                                                        "detection_rate": ci(0.5)},
                                   "postprocessing": {"component_selection": True, "val_dice_without": 0.4,
                                                      "val_dice_with": 0.45, "n_val_patients": 3},
                                   "inference": {"tta_mirror": True, "sliding_window": "auto", "train_patch": 96,
                                                 "n_models": 2}})
    logs = [pd.DataFrame({"epoch": [1, 2], "val_dice": [0.2, 0.5], "train_loss": [1.0, 0.8]})] * 2
    plot_fold_curves(logs, run.segmentation_dir() / "fold_curves.png", "test")
    run.plan.write_text(yaml.safe_dump({"decisions": {"segmentation.optimizer": {"value": "sgd", "source": "plan",
                                                                                 "why": "nnU-Net's recipe"}},
                                        "folds": 2, "folds_reason": "11 patients (< 40)"}))
    run.config_yaml.write_text(with_overrides(tiny_cfg, ["segmentation.tta_mirror=false"]).to_yaml())  # not read
    [(anchor, title, body)] = recipe_sections(run)
    assert anchor == "seg-recipe"
    for text in ("segmentation.optimizer", "nnU-Net&#x27;s recipe", "11 patients (&lt; 40)", "2-fold ensemble",
                 "fold 0 alone", "0.710", "0.640", "per-fold validation curves", "data:image/png;base64",
                 "Test-time mirroring: on", "Sliding window: auto", "Models averaged: 2",
                 "pooled out-of-fold predictions of 3"):
        assert text in body, text
