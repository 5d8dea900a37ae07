import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from typer.testing import CliRunner

from cervirad.cli import app
from cervirad.config import load_config
from cervirad.errors import InputError
from cervirad.segmentation.checkpoint import checkpoint_header, save_checkpoint
from cervirad.segmentation.infer import discover_cases, load_model, segment_paths, select_component
from cervirad.segmentation.model import build_model


def _checkpoint(path, arch="crfe", channels=1, header_arch=None, header_channels=None, recurrence="rows+cols"):
    seqs = ["t2w", "dwi", "adc"][:channels]
    cfg = load_config(None, [f"segmentation.input_sequences={seqs}", "segmentation.lstm_hidden=8",
                             "segmentation.component_selection=never", f"segmentation.recurrence={recurrence}"])
    torch.manual_seed(0)
    net = build_model(arch, channels, lstm_hidden=8, recurrence=cfg.segmentation.recurrence)
    head = checkpoint_header(cfg, header_arch or arch, header_channels or channels)
    save_checkpoint({**head, "epoch": 1, "val_dice": 0.0, "state_dict": net.state_dict()}, path)
    return path


def _volume(path, size=(70, 50, 7), spacing=(0.9, 1.3, 3.3), origin=(-12.0, 40.5, 7.0)):
    rng = np.random.default_rng(0)
    img = sitk.GetImageFromArray(rng.normal(100, 20, size[::-1]).astype(np.float32))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    c, s = np.cos(0.3), np.sin(0.3)
    img.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(img, str(path))
    return img


def test_segment_writes_mask_on_exactly_the_input_grid(tmp_path):
    ck = _checkpoint(tmp_path / "model.pt")
    src = _volume(tmp_path / "case_a.nii.gz")
    out = segment_paths(ck, tmp_path / "case_a.nii.gz", tmp_path / "out")
    assert [p.name for p in out] == ["case_a.nii.gz"]
    m = sitk.ReadImage(str(out[0]))
    assert m.GetSize() == src.GetSize()
    assert np.allclose(m.GetSpacing(), src.GetSpacing()) and np.allclose(m.GetOrigin(), src.GetOrigin())
    assert np.allclose(m.GetDirection(), src.GetDirection())
    assert set(np.unique(sitk.GetArrayFromImage(m))) <= {0, 1}


def test_segment_folder_and_manifest_for_three_channel_model(tmp_path):
    ck = _checkpoint(tmp_path / "m3.pt", channels=3)
    d = tmp_path / "vols"
    d.mkdir()
    for seq in ("t2w", "dwi", "adc"):
        _volume(d / f"x_{seq}.nii.gz", size=(40, 40, 3))
    with pytest.raises(InputError, match="expects 3 sequences .* pass a manifest CSV"):
        segment_paths(ck, d / "x_t2w.nii.gz", tmp_path / "o")
    pd.DataFrame([{"patient_id": "x", "t2w": "vols/x_t2w.nii.gz", "dwi": "vols/x_dwi.nii.gz",
                   "adc": "vols/x_adc.nii.gz"}]).to_csv(tmp_path / "m.csv", index=False)
    out = segment_paths(ck, tmp_path / "m.csv", tmp_path / "o")
    assert sitk.ReadImage(str(out[0])).GetSize() == (40, 40, 3)


def test_checkpoint_from_another_architecture_is_refused(tmp_path):
    ck = _checkpoint(tmp_path / "bad.pt", arch="unet", header_arch="crfe")
    with pytest.raises(InputError, match="does not match architecture 'crfe'.*another architecture"):
        load_model(ck)


def test_checkpoint_with_other_channel_count_is_refused(tmp_path):
    ck = _checkpoint(tmp_path / "bad.pt", channels=3, header_channels=1)
    with pytest.raises(InputError, match="does not match architecture 'crfe' with 1 input channel"):
        load_model(ck)
    good = _checkpoint(tmp_path / "good3.pt", channels=3)
    with pytest.raises(InputError, match="expects 3 input sequence.*data has 1"):
        load_model(good, expect_channels=1)


def test_foreign_file_and_empty_folder(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="could not be loaded"):
        load_model(tmp_path / "x.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "y.pt")
    with pytest.raises(InputError, match="not a cervirad segmentation checkpoint"):
        load_model(tmp_path / "y.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no volume files"):
        discover_cases(tmp_path / "empty", ["t2w"])


def test_cli_segment_empty_folder_exits_2(tmp_path):
    ck = _checkpoint(tmp_path / "model.pt")
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(app, ["segment", "--model", str(ck), "--input", str(tmp_path / "empty"),
                                 "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and isinstance(r.exception, InputError)
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "cervirad"
    p = subprocess.run([str(exe), "segment", "--model", str(ck), "--input", str(tmp_path / "empty"), "--out",
                        str(tmp_path / "o")], capture_output=True, text=True)
    assert p.returncode == 2 and "holds no volume files" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_component_selection_picks_the_lesion_over_a_larger_fainter_blob():
    p = np.zeros((3, 30, 30), np.float32)
    p[1, 2:6, 2:6] = 0.95  # the lesion: 16 voxels, summed probability 15.2
    p[1, 10:15, 10:15] = 0.54  # a larger, fainter blob: 25 voxels, summed probability 13.5
    out = select_component(p, 0.5)
    assert out[1, 3, 3] == pytest.approx(0.95) and not out[1, 10:15, 10:15].any()
    assert np.array_equal(out[out < 0.5], p[out < 0.5] * (p[out < 0.5] < 0.5))  # sub-threshold values untouched
    from cervirad.segmentation.infer import postprocess

    assert np.array_equal(postprocess(p, 0.5, False), p)

def test_checkpoint_records_recurrence_and_older_checkpoints_load_as_rows(tmp_path):
    cfg = load_config(None, ["segmentation.lstm_hidden=8", "segmentation.recurrence=rows+cols"])
    torch.manual_seed(0)
    net = build_model("crfe", 1, lstm_hidden=8, recurrence="rows+cols")
    head = checkpoint_header(cfg, "crfe", 1)
    assert head["recurrence"] == "rows+cols"
    save_checkpoint({**head, "epoch": 1, "val_dice": 0.0, "state_dict": net.state_dict()}, tmp_path / "rc.pt")
    loaded = load_model(tmp_path / "rc.pt", "cpu")
    assert loaded.net.bottleneck[0].recurrence == "rows+cols"
    x = torch.randn(1, 1, 48, 48)
    assert torch.allclose(torch.sigmoid(net.eval()(x)), torch.sigmoid(loaded.net(x)), atol=1e-4)
    old = torch.load(_checkpoint(tmp_path / "old.pt", recurrence="rows"), weights_only=True)
    del old["recurrence"]  # written before the key existed
    torch.save(old, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt", "cpu").net.bottleneck[0].recurrence == "rows"
    old["recurrence"] = "diagonal"
    torch.save(old, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="names recurrence 'diagonal'"):
        load_model(tmp_path / "bad.pt", "cpu")
