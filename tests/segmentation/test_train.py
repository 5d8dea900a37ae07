import json

import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from cervirad import segmentation
from cervirad.config import with_overrides
from cervirad.errors import InputError
from cervirad.pipeline import run_stages
from cervirad.segmentation.train import EarlyStopping, Trainer, pooled_dice
from cervirad.stages import stage_inputs

from tests.conftest import REPO

from .conftest import FAST


def test_early_stopping_counts_epochs_below_min_delta():
    es = EarlyStopping(patience=3, min_delta=0.001)
    assert not es.step(0.50)
    assert not es.step(0.5005)  # < min_delta: 1 bad epoch
    assert not es.step(0.5009)  # still within 0.001 of the 0.50 reference: 2
    assert es.bad_epochs == 2
    assert not es.step(0.52)  # real improvement resets
    assert es.bad_epochs == 0
    assert [es.step(0.5) for _ in range(3)] == [False, False, True]


def test_early_stopping_state_round_trip():
    es = EarlyStopping(10, 0.001)
    for v in (0.1, 0.2, 0.2):
        es.step(v)
    es2 = EarlyStopping(10, 0.001)
    es2.load_state_dict(es.state_dict())
    assert es2.reference == 0.2 and es2.bad_epochs == 1 and es2.history == es.history


def test_pooled_dice():
    # prediction [1, 1, 0, 0] vs truth [1, 0, 1, 0]: one true positive, two predicted, two true
    assert pooled_dice(1, 2, 2) == pytest.approx(0.5)
    assert pooled_dice(0, 0, 0) == 1.0
    assert pooled_dice(0, 3, 0) == 0.0


def test_train_seg_resumes_after_a_crash_and_writes_every_artifact(seg_run, monkeypatch):
    cfg, run = seg_run
    real = Trainer._train_epoch

    def crash_at_epoch_2(self, epoch):
        if epoch == 2:
            raise RuntimeError("simulated kill")
        return real(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", crash_at_epoch_2)
    with pytest.raises(RuntimeError, match="simulated kill"):
        run_stages(cfg, run, ["train-seg"])
    assert run.stage_record("train-seg")["status"] == "failed"
    partial = run.path / ".partial" / "train-seg" / "segmentation" / "last.pt"
    assert partial.is_file() and torch.load(partial, weights_only=True)["epoch"] == 1
    assert not (run.path / "segmentation" / "model.pt").exists()

    seen = []
    monkeypatch.setattr(Trainer, "_train_epoch", lambda self, e: (seen.append(e), real(self, e))[1])
    run_stages(cfg, run, ["train-seg"])
    seg = run.path / "segmentation"
    res = json.loads((seg / "metrics.json").read_text(encoding="utf-8"))
    assert seen == [2] and res["resumed"] is True
    for f in ("model.pt", "last.pt", "train_log.csv", "curves.png", "metrics.json", "per_patient.csv"):
        assert (seg / f).is_file(), f
    n_test = len(json.loads((run.path / "splits.json").read_text(encoding="utf-8"))["test"])
    assert len(list((seg / "overlays").glob("*.png"))) == min(2, n_test)
    ck = torch.load(seg / "model.pt", weights_only=True)
    assert ck["arch"] == "crfe" and ck["in_channels"] == 2 * ck["context_slices"] + 1 and ck["lstm_hidden"] == 16
    last = torch.load(seg / "last.pt", weights_only=True)
    assert "optimizer" in last and last["epoch"] == 2
    log = pd.read_csv(seg / "train_log.csv")
    assert list(log.epoch) == [1, 2]
    m = json.loads((seg / "metrics.json").read_text(encoding="utf-8"))
    for k in ("dice", "f1", "iou_foreground", "iou_mean_fg_bg", "pixel_accuracy", "precision", "recall",
              "specificity", "mae", "hausdorff_mm", "hd95_mm", "infer_ms_per_slice"):
        assert set(m[k]) == {"value", "ci_low", "ci_high"}, k
    assert m["dice"] == res["dice"] and m["model"] == "crfe" and m["n_patients"] == \
        len(json.loads((run.path / "splits.json").read_text(encoding="utf-8"))["test"])
    test_ids = json.loads((run.path / "splits.json").read_text(encoding="utf-8"))["test"]
    assert sorted(p.name for p in (run.path / "masks").iterdir()) == sorted(f"{p}.nii.gz" for p in test_ids)
    manifest = pd.read_csv(run.path / "cohort" / "manifest.csv", dtype=str).set_index("patient_id")
    for pid in test_ids:  # each mask on the patient's ORIGINAL T2W grid
        pred = sitk.ReadImage(str(run.path / "masks" / f"{pid}.nii.gz"))
        ref = sitk.ReadImage(str(run.path / "cohort" / manifest.loc[pid, "t2w"]))
        assert pred.GetSize() == ref.GetSize() and pred.GetSpacing() == ref.GetSpacing()
        assert pred.GetOrigin() == ref.GetOrigin() and pred.GetDirection() == ref.GetDirection()
    assert run.stage_record("train-seg")["status"] == "done"
    # a finished stage with unchanged inputs is not redone
    seen.clear()
    assert run_stages(cfg, run, ["train-seg"]) == {}
    assert seen == []
    # `cervirad segment --config --run-dir` re-scores the run's test patients with the trained model
    from typer.testing import CliRunner

    from cervirad.cli import app

    (seg / "metrics.json").unlink()
    overrides = [a for o in FAST for a in ("--set", o)] + ["--set", "data.demo_patients=12"]
    r = CliRunner().invoke(app, ["segment", "--config", str(REPO / "configs" / "demo.yaml"), "--run-dir", str(run.path), *overrides])
    assert r.exit_code == 0, r.output
    assert json.loads((seg / "metrics.json").read_text(encoding="utf-8"))["n_patients"] == n_test


def test_resume_with_other_settings_starts_over(seg_run, monkeypatch):
    cfg, run = seg_run
    real = Trainer._train_epoch
    monkeypatch.setattr(Trainer, "_train_epoch", lambda self, e: (_ for _ in ()).throw(RuntimeError("boom"))
                        if e == 2 else real(self, e))
    with pytest.raises(RuntimeError):
        run_stages(cfg, run, ["train-seg"])
    seen = []
    monkeypatch.setattr(Trainer, "_train_epoch", lambda self, e: (seen.append(e), real(self, e))[1])
    other = with_overrides(cfg, ["segmentation.lr=0.01"])
    run_stages(other, run, ["train-seg"])
    m = json.loads((run.path / "segmentation" / "metrics.json").read_text(encoding="utf-8"))
    assert seen == [1, 2] and m["resumed"] is False


def test_no_lesion_slices_in_training_is_one_line_error(seg_run):
    cfg, run = seg_run
    csv = run.path / "preprocess" / "slices.csv"
    df = pd.read_csv(csv)
    df.loc[df.split == "train", "has_lesion"] = False
    df.to_csv(csv, index=False)
    with pytest.raises(InputError, match="training split has no slice with a lesion"):
        with run.stage("train-seg") as st:  # the stage function itself: run_stages would redo the edited preprocess
            segmentation.train_stage(cfg, stage_inputs("train-seg", run.path), st)


@pytest.mark.slow
def test_unet_baseline_goes_to_its_own_folder_and_comparison(seg_run):
    cfg, run = seg_run
    cfg = with_overrides(cfg, ["segmentation.epochs=1", "segmentation.compare=[unet]"])
    run_stages(cfg, run, ["train-seg"])
    unet = run.path / "segmentation" / "unet"
    assert torch.load(unet / "model.pt", weights_only=True)["arch"] == "unet"
    assert (unet / "metrics.json").is_file() and any((unet / "masks").glob("*.nii.gz"))
    assert torch.load(run.path / "segmentation" / "model.pt", weights_only=True)["arch"] == "crfe"
    table = pd.read_csv(run.path / "segmentation" / "comparison.csv")
    assert list(table.model) == ["crfe", "unet"] and {"dice", "dice_ci_low", "iou_mean_fg_bg"} <= set(table.columns)
    assert table.equals(pd.read_csv(segmentation.write_comparison(run, [run])))  # found again without the list
    # the report shows it as metric rows x model columns, each metric with its interval
    from cervirad.report.segmentation_results import comparison_table

    shown = comparison_table(table)
    assert "<th>CRFE</th><th>U-Net</th>" in shown
    c, d = (table.set_index("model").loc[a] for a in ("crfe", "unet"))
    cell = lambda r: f"{r.dice:.3f} <span class='muted'>[{r.dice_ci_low:.3f}, {r.dice_ci_high:.3f}]</span>"  # noqa: E731
    assert f"<td>dice</td><td>{cell(c)}</td><td>{cell(d)}</td>" in shown
