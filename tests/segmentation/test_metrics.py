import numpy as np
import pandas as pd
import pytest

from cervirad.segmentation.metrics import (bootstrap_ci, hausdorff_mm, hd95_mm, overlap_metrics, patient_metrics,
                                           summarise)


def test_overlap_metrics_by_hand():
    t = np.zeros((1, 10, 10), bool)
    p = np.zeros_like(t)
    t[0, :4, :5] = True  # 20 voxels
    p[0, :4, 2:7] = True  # 20 voxels, 12 overlap
    m = overlap_metrics(p, t)
    tp, fp, fn, tn = 12, 8, 8, 72
    assert m["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["f1"] == m["dice"]
    assert m["iou_foreground"] == pytest.approx(tp / (tp + fp + fn))
    assert m["iou_background"] == pytest.approx(tn / (tn + fp + fn))
    assert m["iou_mean_fg_bg"] == pytest.approx((tp / 28 + tn / 88) / 2)
    assert m["precision"] == pytest.approx(0.6) and m["recall"] == pytest.approx(0.6)
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["pixel_accuracy"] == pytest.approx(0.84)


def test_empty_conventions():
    z = np.zeros((2, 4, 4), bool)
    assert overlap_metrics(z, z)["dice"] == 1.0
    t = z.copy()
    t[0, 1, 1] = True
    assert overlap_metrics(z, t)["dice"] == 0.0 and overlap_metrics(z, t)["precision"] == 0.0
    assert np.isnan(hausdorff_mm(z, t, (1, 1, 1)))


def test_hausdorff_uses_physical_spacing():
    a = np.zeros((3, 20, 20), bool)
    b = np.zeros_like(a)
    a[1, 5, 5] = True
    b[1, 5, 9] = True  # 4 voxels apart along x
    assert hausdorff_mm(a, b, (3.0, 1.0, 0.5)) == pytest.approx(2.0)
    assert hd95_mm(a, b, (3.0, 1.0, 0.5)) == pytest.approx(2.0)


def test_hd95_ignores_a_few_outlier_voxels():
    t = np.zeros((1, 200, 200), bool)
    t[0, 50:150, 50:150] = True
    p = t.copy()
    p[0, 199, 199] = True  # one far-away voxel
    assert hausdorff_mm(p, t, (1, 1, 1)) > 60
    assert hd95_mm(p, t, (1, 1, 1)) < 1.5


def test_patient_metrics_mae_from_probabilities():
    t = np.zeros((1, 4, 4), np.uint8)
    t[0, :2] = 1
    probs = np.full((1, 4, 4), 0.25, np.float32)
    m = patient_metrics(t, t, (1, 1, 1), probs, t)
    assert m["mae"] == pytest.approx((8 * 0.75 + 8 * 0.25) / 16)


def test_bootstrap_ci_brackets_the_mean_and_summary_is_flat():
    v = np.random.default_rng(0).normal(0.7, 0.1, 30)
    ci = bootstrap_ci(v, 500, 0)
    assert ci["ci_low"] < ci["value"] < ci["ci_high"]
    df = pd.DataFrame({"dice": v, "hausdorff_mm": [np.nan] * 3 + [5.0] * 27})
    s = summarise(df, 200, 0)
    assert s["n_patients"] == 30 and s["n_patients_hd_undefined"] == 3
    assert s["hausdorff_mm"]["value"] == pytest.approx(5.0)
    assert set(s["dice"]) == {"value", "ci_low", "ci_high"}


def test_cropping_to_the_union_box_keeps_distances():
    rng = np.random.default_rng(3)
    t = np.zeros((12, 80, 80), bool)
    p = np.zeros_like(t)
    t[3:8, 20:40, 25:45] = True
    p[4:10, 30:55, 20:38] = True
    p[5, 70, 70] = True
    t &= rng.random(t.shape) > 0.1
    sp = (4.0, 0.7, 0.7)
    from scipy import ndimage

    def full_hd95(a, b):
        def surf(m):
            return m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(3, 1))
        sa, sb = surf(a), surf(b)
        da = ndimage.distance_transform_edt(~sb, sampling=sp)[sa]
        db = ndimage.distance_transform_edt(~sa, sampling=sp)[sb]
        return max(np.percentile(da, 95), np.percentile(db, 95)), max(da.max(), db.max())

    ref95, ref_max = full_hd95(p, t)
    assert hd95_mm(p, t, sp) == pytest.approx(ref95)
    assert hausdorff_mm(p, t, sp) == pytest.approx(ref_max, rel=1e-5)
