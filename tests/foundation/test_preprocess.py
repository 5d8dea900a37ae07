import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from cervirad.pathology import pathologic_typing
from cervirad.splits import load_splits, make_split
from cervirad.config import PreprocessConfig
from cervirad.preprocess import (from_slices, load_meta, load_patient_slices, prepare_volume, restore_mask,
                                 to_slices, zscore)


def test_zscore_pure_core():
    a = np.random.default_rng(0).normal(5, 3, (4, 10, 10)).astype(np.float32)
    z = zscore(a)
    assert abs(z.mean()) < 1e-5 and abs(z.std() - 1) < 1e-5
    m = np.zeros_like(a, bool)
    m[:, :5] = True
    zm = zscore(a, m)
    assert abs(zm[m].mean()) < 1e-5 and abs(zm[m].std() - 1) < 1e-5


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_slices_round_trip(axis):
    vol = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    sl = to_slices(vol, axis)
    assert sl.shape[0] == vol.shape[{"axial": 0, "coronal": 1, "sagittal": 2}[axis]]  # the numpy axis cut along
    assert np.array_equal(from_slices(sl, axis), vol)


def test_prepare_and_restore_on_original_grid():
    rng = np.random.default_rng(1)
    arr = rng.normal(50, 5, (10, 90, 120)).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.9, 0.9, 3.5))
    img.SetOrigin((10.0, -5.0, 2.0))
    mask = np.zeros(arr.shape, np.uint8)
    mask[4:7, 30:50, 40:70] = 1
    m_img = sitk.GetImageFromArray(mask)
    m_img.CopyInformation(img)
    cfg = PreprocessConfig(spacing=(0.7, 0.7, 3.5), slice_size=256)
    prep = prepare_volume([img], cfg, m_img)
    # whole slices: 120 x 0.9 mm / 0.7 mm = 154 columns, 90 x 0.9 / 0.7 = 116 rows, nothing cropped
    assert prep.image.shape == (10, 1, 116, 154) and prep.mask.shape == (10, 116, 154)
    assert prep.meta["grid"]["size"] == [154, 116, 10]
    restored = restore_mask(prep.mask.astype(np.float32), prep.meta, img)
    assert restored.GetSize() == img.GetSize() and restored.GetSpacing() == img.GetSpacing()
    assert restored.GetOrigin() == img.GetOrigin()
    back = sitk.GetArrayFromImage(restored)
    dice = 2 * (back & mask).sum() / (back.sum() + mask.sum())
    assert dice > 0.95


def test_make_split_disjoint_stratified_deterministic():
    ids = [f"P{i:03d}" for i in range(100)]
    labels = {pid: (6 if i < 40 else 2 if i < 60 else 0 if i < 76 else 4 if i < 88 else 7) for i, pid in enumerate(ids)}
    s1 = make_split(ids, labels, (0.7, 0.15, 0.15), seed=5)
    s2 = make_split(ids, labels, (0.7, 0.15, 0.15), seed=5)
    assert s1 == s2
    sets = [set(s1[k]) for k in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert set().union(*sets) == set(ids)
    for cls in (6, 2, 0, 4, 7):
        for part in ("train", "val", "test"):
            assert any(labels[p] == cls for p in s1[part]), (cls, part)
    assert 66 <= len(s1["train"]) <= 74


def test_preprocess_stage_outputs(tiny_run, tiny_cfg):
    run = tiny_run
    splits = load_splits(run.path)
    all_ids = splits["train"] + splits["val"] + splits["test"]
    assert len(all_ids) == len(set(all_ids)) == 12
    assert all(splits[k] for k in ("train", "val", "test"))
    info = json.loads((run.path / "splits.json").read_text(encoding="utf-8"))
    assert info["stratified_by"] == "Pathologic_typing" and info["seed"] == tiny_cfg.run.seed
    img, mask = load_patient_slices(run.path, all_ids[0])
    assert img.dtype == np.float16 and img.shape == (24, 1, 256, 256) and mask.shape == (24, 256, 256)
    meta = load_meta(run.path, all_ids[0])
    assert meta["spacing"] == [0.7, 0.7, 4.0] and meta["slice_axis"] == "axial"
    assert abs(meta["channel_mean"][0]) < 1e-3 and abs(meta["channel_sd"][0] - 1) < 1e-3
    index = pd.read_csv(run.path / "preprocess" / "slices.csv")
    assert len(index) == 12 * 24 and index.has_lesion.any() and (~index.has_lesion).any()
    summary = json.loads((run.path / "preprocess" / "summary.json").read_text(encoding="utf-8"))
    assert summary["slices_with_lesion"] == int(index.has_lesion.sum())
    # every stage reads this one split: the slice index agrees with it
    for part, ids in splits.items():
        assert set(index[index.split == part].patient_id) == set(ids)
    assert run.stage_record("preprocess")["status"] == "done"
    assert (run.path / "fingerprint.json").is_file()


def test_labels_follow_spec_formula():
    df = pd.DataFrame({"patient_id": ["a", "b", "c"], "large_cell": [1, 0, 1], "non_keratinizing": [1, 1, 0],
                       "adenocarcinoma": [1, 0, 0]})
    from cervirad.config import DataConfig

    y = pathologic_typing(df, DataConfig())
    assert y.to_dict() == {"a": 7, "b": 2, "c": 4}
