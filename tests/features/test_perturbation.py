"""Feature robustness: the ICC (known answers, pingouin, pure noise), the perturbation chain (one-voxel
dilation/erosion, reproducible draws, an emptied mask), and the feature stage's robustness.csv."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from cervirad.config import RobustnessConfig, load_config, with_overrides
from cervirad.errors import ConfigError
from cervirad.features import perturbation as R
from cervirad.features.cases import CaseCache, CaseJob
from tests.features.test_stage import extract, fast_params, make_run  # noqa: F401 (fast_params: a fixture)

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; their Table 4 gives ICC(1,1) = .17, ICC(3,1) = .71
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)


# --------------------------------------------------------------------------- ICC
def test_icc_known_answer_shrout_fleiss():
    r = R.icc(SHROUT_FLEISS)
    assert round(float(r["icc1"][0]), 2) == 0.17
    assert round(float(r["icc3"][0]), 2) == 0.71
    assert r["icc1_ci_low"][0] < r["icc1"][0] < r["icc1_ci_high"][0]
    assert r["icc3_ci_low"][0] < r["icc3"][0] < r["icc3_ci_high"][0]
    assert r["n_patients"][0] == 6 and r["n_complete"][0] == 6


def test_icc_matches_pingouin_on_a_fixture():
    pg = pytest.importorskip("pingouin", reason="pingouin (test extra) not installed")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(15, 4, 3))
    X[:, :, 0] += 3 * rng.normal(size=(15, 1))  # reliable
    X[:, :, 1] += np.arange(4) * 0.7 + rng.normal(size=(15, 1))  # rater offsets: ICC(3,1) > ICC(1,1)
    ours = R.icc(X)
    for f in range(3):
        long = pd.DataFrame([(s, j, X[s, j, f]) for s in range(15) for j in range(4)], columns=["s", "r", "v"])
        ref = pg.intraclass_corr(long, "s", "r", "v").set_index("Type")
        for names, ours_key in ((("ICC(1,1)", "ICC1"), "icc1"), (("ICC(C,1)", "ICC3"), "icc3")):  # 0.7 / older
            row = ref.loc[next(n for n in names if n in ref.index)]
            assert ours[ours_key][f] == pytest.approx(row["ICC"], abs=1e-10)
            # pingouin rounds its CI to 2 decimals
            assert ours[f"{ours_key}_ci_low"][f] == pytest.approx(row["CI95"][0], abs=0.006)
            assert ours[f"{ours_key}_ci_high"][f] == pytest.approx(row["CI95"][1], abs=0.006)


def test_icc_unbalanced_one_way_and_complete_cases_two_way():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(8, 3, 1)) + 2 * rng.normal(size=(8, 1, 1))
    X[2, 1, 0] = np.nan  # one left-out perturbation
    r = R.icc(X)
    # one-way ANOVA with unequal group sizes, written out
    groups = [g[np.isfinite(g)] for g in X[:, :, 0]]
    N, a = sum(len(g) for g in groups), len(groups)
    grand = np.concatenate(groups).mean()
    msb = sum(len(g) * (g.mean() - grand) ** 2 for g in groups) / (a - 1)
    msw = sum(((g - g.mean()) ** 2).sum() for g in groups) / (N - a)
    k0 = (N - sum(len(g) ** 2 for g in groups) / N) / (a - 1)
    assert r["icc1"][0] == pytest.approx((msb - msw) / (msb + (k0 - 1) * msw))
    assert r["n_patients"][0] == 8 and r["n_complete"][0] == 7
    assert r["icc3"][0] == pytest.approx(R.icc(np.delete(X, 2, axis=0))["icc3"][0])


def test_pure_noise_feature_has_icc_near_zero_and_a_stable_one_near_one():
    rng = np.random.default_rng(2)
    noise = rng.normal(size=(200, 5))
    stable = rng.normal(size=(200, 1)) * 10 + rng.normal(scale=0.1, size=(200, 5))
    r = R.icc(np.stack([noise, stable], axis=2))
    assert abs(r["icc1"][0]) < 0.06 and r["icc1_ci_low"][0] < 0 < r["icc1_ci_high"][0]
    assert r["icc1"][1] > 0.99


# --------------------------------------------------------------------------- the chain
def _cube(spacing=(1.0, 1.0, 1.0), side=10, size=24):
    arr = np.zeros((size, size, size), np.uint8)
    lo = (size - side) // 2
    arr[lo:lo + side, lo:lo + side, lo:lo + side] = 1
    mask = sitk.GetImageFromArray(arr)
    mask.SetSpacing(spacing)
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(100, 10, arr.shape).astype(np.float32))
    image.CopyInformation(mask)
    return image, mask


@pytest.mark.parametrize("spacing, dilated, eroded", [
    ((1.0, 1.0, 1.0), 1000 + 6 * 100, 8 ** 3),  # 6-connected: one voxel onto each face
    ((1.0, 1.0, 3.0), 10 * (12 * 12 - 4), 10 * 8 * 8),  # thick slices: in-plane only
])
def test_one_voxel_dilation_and_erosion(spacing, dilated, eroded):
    image, mask = _cube(spacing)
    for step, expected in ((1, dilated), (-1, eroded), (0, 1000)):
        p = R.Perturbation(0, 1, volume_step=step)
        img2, m2 = R.perturb(image, mask, p)
        assert int(sitk.GetArrayViewFromImage(m2).sum()) == expected
        assert np.array_equal(sitk.GetArrayViewFromImage(img2), sitk.GetArrayViewFromImage(image))  # no noise


def test_shape_volume_through_the_worker(tmp_path, fast_params):
    """PyRadiomics' VoxelVolume of the perturbed case: cube +-1 voxel, spacing 1 x 1 x 3 mm."""
    from cervirad.features.radiomics_ext import load_params

    image, mask = _cube((1.0, 1.0, 3.0))
    sitk.WriteImage(image, str(tmp_path / "img.nii.gz"))
    sitk.WriteImage(mask, str(tmp_path / "msk.nii.gz"))
    job = CaseJob("C1", "t2w", str(tmp_path / "img.nii.gz"), str(tmp_path / "msk.nii.gz"),
                  load_params(fast_params), None, {"histogram_bins": 16}, 1e-3)
    vols = {}
    for step in (-1, 0, 1):
        res = R.extract_perturbed(R.PerturbedJob(job, R.Perturbation(0, 1, volume_step=step), "k"))
        assert "error" not in res, res.get("error")
        vols[step] = res["features"]["original_shape_VoxelVolume"]
    assert vols == {-1: 640 * 3.0, 0: 1000 * 3.0, 1: 1400 * 3.0}


def test_perturbations_are_reproducible_from_the_seed():
    image, mask = _cube((1.0, 1.0, 3.0))
    rc = RobustnessConfig(perturbations=4)
    draws = [R.draw(rc, 42, "P001", i) for i in range(4)]
    assert draws == [R.draw(rc, 42, "P001", i) for i in range(4)]  # same seed: same draws
    assert draws[:2] == [R.draw(RobustnessConfig(perturbations=2), 42, "P001", i) for i in range(2)]  # N-free
    assert draws[0] != R.draw(rc, 43, "P001", 0) and draws[0] != R.draw(rc, 42, "P002", 0)
    a = R.perturb(image, mask, draws[1])
    b = R.perturb(image, mask, draws[1])
    for x, y in zip(a, b):
        assert np.array_equal(sitk.GetArrayViewFromImage(x), sitk.GetArrayViewFromImage(y))
    m0 = sitk.GetArrayViewFromImage(mask).astype(bool)
    m1 = sitk.GetArrayViewFromImage(a[1]).astype(bool)
    dice = 2 * (m0 & m1).sum() / (m0.sum() + m1.sum())
    assert 0.6 < dice < 1.0  # moved, not destroyed
    off = R.draw(RobustnessConfig(perturbations=2, rotation=False, noise=False), 42, "P001", 1)
    assert off.angle_deg == 0 and off.noise_fraction == 0 and off.shift_voxels == draws[1].shift_voxels


def test_noise_sd_estimate_ignores_zero_padding():
    rng = np.random.default_rng(3)
    arr = np.zeros((20, 64, 64))
    arr[:, 8:56, 8:56] = 100 + rng.normal(0, 4.0, (20, 48, 48))
    assert R.noise_sd(arr) == pytest.approx(4.0, rel=0.1)


def test_an_emptied_mask_is_left_out_with_a_warning(tmp_path, fast_params):
    from cervirad.features.radiomics_ext import load_params

    arr = np.zeros((6, 12, 12), np.uint8)
    arr[2:4, 5:7, 5:7] = 1  # 8 voxels: one erosion empties it
    mask = sitk.GetImageFromArray(arr)
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(50, 5, (6, 12, 12)).astype(np.float32))
    image.CopyInformation(mask)
    sitk.WriteImage(image, str(tmp_path / "i.nii.gz"))
    sitk.WriteImage(mask, str(tmp_path / "m.nii.gz"))
    job = CaseJob("TINY", "t2w", str(tmp_path / "i.nii.gz"), str(tmp_path / "m.nii.gz"), load_params(fast_params),
                  None, {"histogram_bins": 16}, 1e-3, voxels=20)
    jobs = [R.PerturbedJob(job, R.Perturbation(i, 1, volume_step=s), f"k{i}") for i, s in enumerate((-1, 0, 1))]
    results, hits = R.extract_perturbed_all(jobs, CaseCache(tmp_path / "cache"), 1, "loky", None)
    emptied = [r for r in results if r.get("emptied")]
    assert len(emptied) == 1 and "TINY" in emptied[0]["error"] and "leaves 0 lesion voxel" in emptied[0]["error"]
    cols = ["original_shape_VoxelVolume", "original_firstorder_Mean"]
    X, patients, warnings = R.perturbed_values(results, cols, ("t2w",), 3)
    assert patients == ["TINY"] and len(warnings) == 1
    assert np.isnan(X[0, 0]).all() and np.isfinite(X[0, 1:]).all()  # its ICC rows use the other two


@pytest.mark.parametrize("override, message", [
    ("features.robustness.perturbations=1", "0 (off) or an integer >= 2"),
    ("features.robustness.perturbations=-2", "0 (off) or an integer >= 2"),
    ("features.robustness.contour_amplitude=0", "features.robustness.contour_amplitude"),
])
def test_bad_robustness_settings_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        load_config(None, [override])
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- the stage
@pytest.mark.slow
def test_stage_writes_robustness_csv_and_a_raised_n_reuses_the_cache(tmp_path, tiny_cfg, tiny_run,
                                                                   fast_params):
    from cervirad.splits import load_splits

    cohort = tiny_run.path / "cohort"
    man = pd.read_csv(cohort / "manifest.csv")
    splits = load_splits(tiny_run.path)
    keep = splits["val"] + splits["train"][:3] + splits["test"][:1]  # 4 training patients and a test patient
    man = man[man["patient_id"].isin(keep)]
    for c in man.columns[1:]:
        man[c] = [str(cohort / v) for v in man[c]]
    man.to_csv(tmp_path / "manifest.csv", index=False)
    cfg, run = make_run(tmp_path / "run", tiny_cfg, tiny_run, f"features.radiomics_params={fast_params}",
                        f"data.manifest={tmp_path / 'manifest.csv'}", "features.robustness.perturbations=2")
    out = extract(cfg, run)
    rob = pd.read_csv(out / "robustness.csv")
    table = pd.read_parquet(out / "features.parquet")
    image_cols = [c for c in table.columns[3:] if not c.startswith("clin_")]
    assert list(rob["feature"]) == image_cols
    assert list(rob.columns) == R.COLUMNS
    n_fit = 4
    assert (rob["n_perturbations"] == 2).all() and rob["n_patients"].max() == n_fit
    assert set(rob["feature_class"]) == {"shape", "firstorder", "histogram"}
    assert set(rob["image_type"]) == {"original", "histogram"}
    finite = rob["icc1"].dropna()
    assert len(finite) > 0.8 * len(rob) and (finite <= 1).all()
    vol = rob.set_index("feature").loc["original_shape_VoxelVolume"]
    assert vol["icc1"] > 0.8  # lesion volume barely moves relative to its spread across patients
    info = run.stage_record("features")
    assert info["robustness_patients"] == n_fit and info["robustness_cached"] == 0
    cfg3 = with_overrides(cfg, ["features.robustness.perturbations=3"])
    extract(cfg3, run)
    info = run.stage_record("features")
    assert info["robustness_cached"] == 2 * n_fit  # perturbations 0 and 1 come from the cache
    assert (pd.read_csv(out / "robustness.csv")["n_perturbations"] == 3).all()
