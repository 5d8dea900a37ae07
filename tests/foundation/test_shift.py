"""Shift check between a development and an external cohort (issue 15, items 3-4)."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from cervirad.shift import clinical_shift, feature_shift, fingerprint_shift, orientation_code
from cervirad.shift_warnings import shift_warnings
from cervirad.validate import _fingerprint

SEQS = ("t2w", "adc")


def fingerprint(rng, n, spacing=(0.5, 0.5, 4.0), scale=1.0, classes=None, direction=None, lesion_scale=1.0):
    """A fingerprint as validate writes it (built by validate's own _fingerprint) from per-patient facts."""
    per_patient = []
    for i in range(n):
        facts = {"id": f"P{i:03d}"}
        for seq in SEQS:
            p50 = rng.normal(300, 30) * scale
            facts[seq] = {"size": [320, 320, 24], "spacing": list(spacing),
                          "p0_5": rng.normal(10, 3) * scale, "p50": p50, "p99_5": rng.normal(900, 80) * scale}
            if direction is not None:
                facts[seq]["direction"] = direction
        facts["lesion_ml"] = float(rng.lognormal(np.log(20), 0.6) * lesion_scale)
        facts["lesion_slices"] = 5
        per_patient.append(facts)
    cohort = SimpleNamespace(sequences=SEQS, patients=per_patient)
    counts = classes if classes is not None else {"0": n * 3 // 10, "2": n * 4 // 10, "6": n - n * 7 // 10}
    return _fingerprint(cohort, per_patient, counts, [])


def table(rng, n, shift_feature=0.0):
    data = {f"f{i:02d}": rng.normal(0, 1, n) for i in range(30)}
    data["f07"] = data["f07"] + shift_feature
    data["clin_age"] = rng.normal(55, 10, n).round()
    data["clin_figo"] = rng.integers(0, 4, n).astype(float)
    return pd.DataFrame(data, index=[f"P{i:03d}" for i in range(n)])


FEATURES = [f"f{i:02d}" for i in range(30)]
CLIN = ["clin_age", "clin_figo"]


def test_same_site_is_silent():
    for seed in range(5):  # several draws: chance alone never warns
        rng = np.random.default_rng(seed)
        dev, ext = fingerprint(rng, 100), fingerprint(rng, 30)
        rows = fingerprint_shift(dev, ext) + clinical_shift(table(rng, 100), table(rng, 30), CLIN)
        ft = feature_shift(table(rng, 100), table(rng, 30), FEATURES)
        assert shift_warnings(rows, ft) == [], (seed, shift_warnings(rows, ft))
        assert not any(r["flag"] for r in rows)


def test_shifted_cohort_warns_once_per_kind():
    rng = np.random.default_rng(1)
    sag = [0, 0, 1, 1, 0, 0, 0, 1, 0]  # index axes point P, S, L: a sagittal stack
    dev = fingerprint(rng, 100, direction=[1, 0, 0, 0, 1, 0, 0, 0, 1])
    ext = fingerprint(rng, 30, spacing=(0.7, 0.7, 4.0), scale=3.0, classes={"2": 20, "6": 8, "4": 2},
                      direction=sag, lesion_scale=3.0)
    dt, et = table(rng, 100), table(rng, 30, shift_feature=2.0)
    et["clin_age"] += 25
    rows = fingerprint_shift(dev, ext) + clinical_shift(dt, et, CLIN)
    ft = feature_shift(dt, et, FEATURES)
    lines = shift_warnings(rows, ft)
    kinds = [ln.split(" — ")[0] for ln in lines]
    assert kinds == ["shift: spacing (development vs external)", "shift: field of view (development vs external)",
                     "shift: orientation (development vs external)", "shift: intensity (development vs external)",
                     "shift: lesion volume (development vs external)", "shift: class mix (development vs external)",
                     "shift: clinical (development vs external)", "shift: features"], lines
    assert "t2w spacing x 0.5 vs 0.7 mm (+40 %)" in lines[0]
    assert "stored PSL (unseen in development)" in lines[2]
    assert "t2w intensity range p0.5-p99.5" in lines[3] and "(x2.98)" in lines[3]
    # a class present in development but absent externally, and one unseen in development, named
    assert "class 0 (present in development, absent externally)" in lines[5]
    assert "class 4 (unseen in development" in lines[5]
    assert "clin_age" in lines[6] and "clin_figo" not in lines[6]
    assert ft.iloc[0]["feature"] == "f07" and ft.iloc[0]["smd"] > 1.5 and ft.iloc[0]["flag"]
    assert ft["flag"].sum() == 1 and "1 of 30 features" in lines[7] and "largest: f07 SMD" in lines[7]
    absent = [r for r in rows if r["kind"] == "class_mix" and r["external"] == 0]
    assert [r["counts"] for r in absent] == [[30, 0]]


def test_nan_columns_do_not_crash():
    rng = np.random.default_rng(0)
    dt, et = table(rng, 20), table(rng, 10)
    dt["f03"] = np.nan                       # all NaN in development
    et.loc[et.index[:5], "f04"] = np.nan     # partly missing externally
    et["f05"] = "n/a"                        # unreadable text
    dt["f06"] = 1.0                          # constant in both
    et["f06"] = 1.0
    ft = feature_shift(dt, et.drop(columns=["f08"]), FEATURES)  # f08 absent externally
    assert len(ft) == 30 and set(ft.columns) >= {"feature", "smd", "ks_stat", "ks_p", "dev_median", "ext_median"}
    by = ft.set_index("feature")
    assert np.isnan(by.loc["f03", "smd"]) and np.isnan(by.loc["f08", "ks_p"]) and by.loc["f04", "n_ext"] == 5
    assert by.loc["f06", "smd"] == 0 and not by.loc["f06", "flag"]
    assert list(ft["feature"][-3:].sort_values()) == ["f03", "f05", "f08"]  # NaN SMD sorted last
    rows = clinical_shift(dt.assign(clin_x=np.nan), et, CLIN + ["clin_x", "clin_y"])
    assert [r["item"] for r in rows if r["flag"]] == ["clin_x", "clin_y"]  # absent column: flagged, named
    shift_warnings(rows, ft)
    assert feature_shift(dt, et, []).empty and shift_warnings([], feature_shift(dt, et, [])) == []


def test_fingerprint_without_labels_or_masks():
    rng = np.random.default_rng(0)
    dev, ext = fingerprint(rng, 10, classes={}), fingerprint(rng, 10, classes={})
    ext["lesion_volume_ml"], ext["patients"] = {}, []
    del ext["sequences"]["adc"]
    rows = fingerprint_shift(dev, ext)
    assert not [r for r in rows if r["kind"] in ("class_mix", "lesion_volume")]
    assert shift_warnings(rows, None) == ["shift: sequences (development vs external) — adc missing externally: "
                                          "development present, external absent"]


def test_orientation_code():
    assert orientation_code([1, 0, 0, 0, 1, 0, 0, 0, 1]) == "LPS"
    assert orientation_code([-1, 0, 0, 0, -1, 0, 0, 0, 1]) == "RAS"
    assert orientation_code([0, 0, 1, 1, 0, 0, 0, 1, 0]) == "PSL"


@pytest.mark.parametrize("spacing, warns", [((0.8, 0.8, 3.0), False), ((0.8, 0.8, 5.0), True)])
def test_real_fingerprints(tmp_path, spacing, warns):
    """Two tiny cohorts written like the other foundation tests, validated, then compared."""
    import SimpleITK as sitk

    from cervirad.config import DataConfig
    from cervirad.io import load_cohort
    from cervirad.validate import validate_cohort

    from .helpers import write_small_cohort
    fps = []
    for name, seed, sp in (("dev", 0, (0.8, 0.8, 3.0)), ("ext", 1, spacing)):
        manifest, clinical = write_small_cohort(tmp_path / name, n=4, seed=seed)
        for f in manifest.parent.glob("*.nii.gz"):
            img = sitk.ReadImage(str(f))
            img.SetSpacing(sp)
            sitk.WriteImage(img, str(f))
        fps.append(validate_cohort(load_cohort(manifest, clinical, sequences=("t2w",)), DataConfig(sequences=("t2w",)),
                                   n_threads=1))
    lines = shift_warnings(fingerprint_shift(*fps), None)
    if warns:
        assert [ln.split(" — ")[0] for ln in lines] == ["shift: spacing (development vs external)",
                                                       "shift: field of view (development vs external)",
                                                       "shift: lesion volume (development vs external)"], lines
        assert "t2w spacing z 3 vs 5 mm (+67 %)" in lines[0]
        assert "lesion volume median 0.369 vs 0.614 ml (+67 %)" in lines[2]  # same voxels, thicker slices
    else:
        assert lines == []
