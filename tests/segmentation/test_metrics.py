import numpy as np
import pandas as pd
import pytest

from cervirad.segmentation.metrics import (HD_MISS_PENALTY, bootstrap_ci, detected, hausdorff_mm, hd95_mm,
                                           image_diagonal_mm, overlap_metrics, patient_metrics, summarise)


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


def _lesion_pair(shift: int | None, shape=(3, 20, 20)):
    """Reference: one 3x3 block; prediction: the block shifted by ``shift`` voxels along x, or empty."""
    t = np.zeros(shape, bool)
    t[1, 5:8, 5:8] = True
    p = np.zeros_like(t)
    if shift is not None:
        p[1, 5:8, 5 + shift:8 + shift] = True
    return p, t


def test_a_missed_lesion_is_penalised_in_the_headline_hd_not_skipped():
    sp = (3.0, 1.0, 0.5)
    pairs = [_lesion_pair(s) for s in (0, 1, 2)] + [_lesion_pair(None)]  # the last lesion is missed
    rows = [patient_metrics(p, t, sp) for p, t in pairs]
    df = pd.DataFrame(rows)
    s = summarise(df, 200, 0)
    diagonal = np.sqrt((3 * 3.0) ** 2 + (20 * 1.0) ** 2 + (20 * 0.5) ** 2)  # sqrt(sum((size*spacing)^2))
    assert image_diagonal_mm((3, 20, 20), sp) == pytest.approx(diagonal)
    hd95_hit = [hd95_mm(p, t, sp) for p, t in pairs[:3]]
    hd_hit = [hausdorff_mm(p, t, sp) for p, t in pairs[:3]]
    assert hd95_hit[2] > 0  # the distances are not trivially zero
    # headline: the miss counts as the image diagonal
    assert s["hd95_mm"]["value"] == pytest.approx((sum(hd95_hit) + diagonal) / 4)
    assert s["hausdorff_mm"]["value"] == pytest.approx((sum(hd_hit) + diagonal) / 4)
    # the old rule (mean of the finite values, the miss skipped) is the detected-only mean, and lower
    old_mean = float(np.mean(hd95_hit))
    assert s["hd95_mm_detected"]["value"] == pytest.approx(old_mean)
    assert old_mean < s["hd95_mm"]["value"]
    assert s["hausdorff_mm_detected"]["value"] == pytest.approx(np.mean(hd_hit))
    assert s["detection_rate"]["value"] == pytest.approx(3 / 4)
    assert s["n_patients_detected"] == 3 and s["n_patients_missed"] == 1 and s["n_patients_hd_undefined"] == 0
    assert s["hd_miss_penalty"] == HD_MISS_PENALTY == "image diagonal (mm)"
    for k in ("detection_rate", "hd95_mm", "hd95_mm_detected", "hausdorff_mm", "hausdorff_mm_detected"):
        assert set(s[k]) == {"value", "ci_low", "ci_high"}, k
        assert s[k]["ci_low"] <= s[k]["value"] <= s[k]["ci_high"], k


def test_detection_is_overlap_and_the_penalty_uses_the_given_image_extent():
    sp = (3.0, 1.0, 0.5)
    p, t = _lesion_pair(4)  # non-empty but wholly outside the lesion: a miss
    assert detected(p, t) == 0.0 and np.isfinite(hd95_mm(p, t, sp))
    m = patient_metrics(p, t, sp, diagonal_mm=123.0)  # the original grid's diagonal, as evaluate passes it
    assert m["detected"] == 0.0 and m["hd95_mm"] == 123.0 and m["hausdorff_mm"] == 123.0
    assert np.isnan(m["hd95_mm_detected"]) and np.isnan(m["hausdorff_mm_detected"])
    assert m["hd95_mm"] > hd95_mm(p, t, sp)  # the penalty is never below a real distance
    p, t = _lesion_pair(2)  # partial overlap: detected, distances unchanged
    m = patient_metrics(p, t, sp, diagonal_mm=123.0)
    assert m["detected"] == 1.0 and m["hd95_mm"] == m["hd95_mm_detected"] == pytest.approx(hd95_mm(p, t, sp))
    z = np.zeros((3, 20, 20), bool)  # no reference lesion: nothing to detect, HD undefined
    m = patient_metrics(p, z, sp)
    assert np.isnan(m["detected"]) and np.isnan(m["hd95_mm"]) and np.isnan(m["hd95_mm_detected"])


def test_report_shows_detection_rate_and_detected_only_hd95_with_n():
    from cervirad.jsonutil import jsonable
    from cervirad.report.segmentation_results import detection_summary

    sp = (3.0, 1.0, 0.5)
    df = pd.DataFrame([patient_metrics(p, t, sp) for p, t in (_lesion_pair(0), _lesion_pair(1), _lesion_pair(None))])
    html_ = detection_summary(jsonable(summarise(df, 50, 0)))
    assert "detection rate" in html_ and "HD95 (mm), detected lesions only" in html_
    assert "<td>2</td>" in html_ and "<td>3</td>" in html_  # n detected, n lesions
    assert "1 of 3 lesion(s) missed" in html_ and "image diagonal (mm)" in html_
    assert detection_summary({"dice": {"value": 0.5}}) == ""  # an older metrics.json: nothing to show


def test_lesion_diameter_and_size_strata():
    from cervirad.report.segmentation_results import lesion_size_strata
    from cervirad.segmentation.metrics import LESION_BANDS, lesion_band, lesion_diameter_mm

    t = np.zeros((10, 40, 40), bool)
    t[2:7, 10:20, 10:14] = True  # voxel centres span 4, 9, 3 voxels
    sp = (4.0, 1.0, 0.5)
    assert lesion_diameter_mm(t, sp) == pytest.approx(np.sqrt(16.0 ** 2 + 9.0 ** 2 + 1.5 ** 2))
    flat = np.zeros_like(t)
    flat[3, 5:35, 5:6] = True  # one-slice, one-column lesion: 29 mm
    assert lesion_diameter_mm(flat, sp) == pytest.approx(29.0)
    assert np.isnan(lesion_diameter_mm(np.zeros_like(t), sp))
    assert [lesion_band(d) for d in (0.0, 9.99, 10.0, 20.0, 39.9, 40.0, np.nan)] == \
        ["<10mm", "<10mm", "10-20mm", "20-40mm", "20-40mm", ">=40mm", None]
    df = pd.DataFrame({"dice": [0.2, 0.4, 0.8, 0.9], "iou_foreground": [0.1, 0.3, 0.7, 0.8],
                       "detected": [0.0, 1.0, 1.0, 1.0], "hausdorff_mm": [50.0, 4.0, 3.0, 2.0],
                       "lesion_diameter_mm": [5.0, 8.0, 25.0, 30.0]})
    s = summarise(df, 100, 0)["by_lesion_size"]
    assert list(s) == list(LESION_BANDS)
    assert s["<10mm"]["n_patients"] == 2 and s["<10mm"]["dice"]["value"] == pytest.approx(0.3)
    assert s["<10mm"]["detection_rate"]["value"] == pytest.approx(0.5)
    assert s["20-40mm"]["iou_foreground"]["value"] == pytest.approx(0.75)
    assert s["10-20mm"] == {"n_patients": 0} and s[">=40mm"] == {"n_patients": 0}
    assert all(set(v[k]) == {"value", "ci_low", "ci_high"} for v in s.values() for k in v if k != "n_patients")
    html_ = lesion_size_strata({"by_lesion_size": s})
    assert "By lesion size" in html_ and "&lt;10mm" in html_ and "n/a" in html_


def test_slice_level_detection_is_named_apart_from_voxel_metrics():
    from cervirad.segmentation.metrics import patient_metrics, slice_detection

    truth = np.zeros((5, 8, 8), bool)
    truth[1:3, 2:5, 2:5] = True  # lesion on slices 1, 2
    pred = np.zeros_like(truth)
    pred[2, 2:4, 2:4] = True  # found on slice 2 (TP), missed on slice 1 (FN)
    pred[4, 0, 0] = True  # a false alarm on slice 4 (FP); slices 0, 3 are TN
    d = slice_detection(pred, truth)
    assert d == {"slice_detection_accuracy": 3 / 5, "slice_detection_sensitivity": 1 / 2,
                 "slice_detection_specificity": 2 / 3}
    probs = pred.astype(np.float32) * 0.8
    m = patient_metrics(pred, truth, (3.0, 1.0, 1.0), probs, truth)
    assert m["slice_detection_accuracy"] == 0.6 and m["mae_255"] == pytest.approx(255 * m["mae"])
    assert m["specificity"] != m["slice_detection_specificity"]  # voxel-level vs slice-level
