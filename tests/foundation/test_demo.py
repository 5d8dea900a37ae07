import hashlib

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from cervirad.demo import category_counts, write_demo_cohort
from cervirad.errors import InputError


def _digest(folder):
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(folder).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    write_demo_cohort(tmp_path / "a", patients=10, seed=3)
    write_demo_cohort(tmp_path / "b", patients=10, seed=3)
    write_demo_cohort(tmp_path / "c", patients=10, seed=4)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_demo_cohort_layout_and_content(tmp_path):
    manifest, clinical = write_demo_cohort(tmp_path / "d", patients=10, seed=1)
    m, c = pd.read_csv(manifest), pd.read_csv(clinical)
    assert list(m.columns) == ["patient_id", "t2w", "dwi", "adc", "mask"]
    for col in ("age", "hpv_status", "figo_stage", "lymph_node_metastasis", "lymphovascular_invasion",
                "invasion_depth_cm", "chemotherapy", "radiotherapy", "large_cell", "non_keratinizing", "adenocarcinoma"):
        assert col in c.columns
    t2 = sitk.ReadImage(str(manifest.parent / m.t2w[0]))
    assert t2.GetSize() == (256, 256, 24) and np.allclose(t2.GetSpacing(), (0.7, 0.7, 4.0))
    dwi = sitk.ReadImage(str(manifest.parent / m.dwi[0]))
    assert dwi.GetSize() == (128, 128, 24)
    for _, row in m.iterrows():
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(manifest.parent / row["mask"])))
        assert set(np.unique(mask)) == {0, 1}
        # equivalent sphere diameter within the 1-4 cm lesion range (the irregular shape allows a margin)
        vol_mm3 = mask.sum() * 0.7 * 0.7 * 4.0
        d = (6 * vol_mm3 / np.pi) ** (1 / 3)
        assert 7 <= d <= 48, d


def test_category_mix_is_like_the_papers():
    counts = category_counts(100)
    assert sum(counts.values()) == 100
    assert max(counts, key=counts.get) == 6
    assert counts[4] < counts[6] and counts[7] < counts[6]
    assert min(counts.values()) * 0.7 >= 8  # enough training members for 5-fold CV with SMOTE


def test_lesion_intensity_depends_on_category(tmp_path):
    manifest, clinical = write_demo_cohort(tmp_path / "d", patients=30, seed=2)
    m, c = pd.read_csv(manifest), pd.read_csv(clinical)
    means = []
    for _, row in m.iterrows():
        img = sitk.GetArrayFromImage(sitk.ReadImage(str(manifest.parent / row["t2w"])))
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(manifest.parent / row["mask"]))) > 0
        means.append(img[mask].mean())
    c["lesion_mean"] = means
    adeno = c[c.adenocarcinoma == 1].lesion_mean.mean()
    scc = c[c.adenocarcinoma == 0].lesion_mean.mean()
    assert adeno > scc


def test_too_small_demo_is_refused(tmp_path):
    with pytest.raises(InputError, match="too small"):
        write_demo_cohort(tmp_path, patients=3)


# ---------------------------------------------------------------------------- sites (issue 15)
# Content of write_demo_cohort(patients=10, seed=3) as written by the code before sites existed
# (voxels, dtype, shape, geometry of every volume, and the CSV bytes; demo.json left out as it now
# names the site). Site A must keep producing exactly this. The .nii.gz bytes were identical too.
SITE_A_CONTENT_SHA256 = "41f6755ba6ce1a5eedb5ab92d394dbf238ef787bd78fca98f264f3e6fbe1154d"


def _content_digest(folder):
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if not f.is_file() or f.name == "demo.json":
            continue
        h.update(f.relative_to(folder).as_posix().encode())
        if f.name.endswith(".nii.gz"):
            img = sitk.ReadImage(str(f))
            a = sitk.GetArrayFromImage(img)
            h.update(str((a.dtype.str, a.shape, img.GetSpacing(), img.GetOrigin(), img.GetDirection())).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        else:
            h.update(f.read_bytes())
    return h.hexdigest()


def _cli(*args, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "cervirad.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def site_b(tmp_path_factory):
    out = tmp_path_factory.mktemp("site_b") / "cohort"
    res = _cli("demo-data", "--out", out, "--site", "B", "--patients", 10, "--seed", 3, cwd=out.parent)
    assert res.returncode == 0, res.stdout + res.stderr
    return out


def test_site_a_is_the_demo_as_before(tmp_path):
    import json

    write_demo_cohort(tmp_path / "a", patients=10, seed=3)
    assert _content_digest(tmp_path / "a") == SITE_A_CONTENT_SHA256
    write_demo_cohort(tmp_path / "explicit", patients=10, seed=3, site="A")
    assert _digest(tmp_path / "explicit") == _digest(tmp_path / "a")
    assert json.loads((tmp_path / "a" / "demo.json").read_text())["site"] == "A"


def test_site_b_is_another_hospital(tmp_path, site_b):
    write_demo_cohort(tmp_path / "a", patients=10, seed=3)
    ma, mb = pd.read_csv(tmp_path / "a" / "manifest.csv"), pd.read_csv(site_b / "manifest.csv")
    ca, cb = pd.read_csv(tmp_path / "a" / "clinical.csv"), pd.read_csv(site_b / "clinical.csv")
    assert list(mb.columns) == list(ma.columns) and list(cb.columns) == list(ca.columns)
    assert mb.patient_id.str.match(r"EX\d{3}$").all() and not set(mb.patient_id) & set(ma.patient_id)

    # class mix: site B's own proportions, not site A's
    def cat(c):
        return (4 * c.large_cell + 2 * c.non_keratinizing + c.adenocarcinoma).value_counts().to_dict()

    assert cat(cb) == category_counts(10, "B") != category_counts(10, "A") == cat(ca)
    assert category_counts(100, "B")[6] < category_counts(100, "A")[6]

    sagittal, lesion_a, lesion_b = 0, [], []
    for _, row in mb.iterrows():
        t2 = sitk.ReadImage(str(site_b / row.t2w))
        mask = sitk.ReadImage(str(site_b / row["mask"]))
        # the mask is stored exactly like its T2W
        assert mask.GetSize() == t2.GetSize() and mask.GetDirection() == t2.GetDirection()
        assert np.allclose(mask.GetOrigin(), t2.GetOrigin()) and np.allclose(mask.GetSpacing(), t2.GetSpacing())
        assert sorted(t2.GetSpacing()) == pytest.approx([0.5, 0.5, 3.0]) and sorted(t2.GetSize()) == [32, 360, 360]
        if not np.allclose(t2.GetDirection(), np.eye(3).ravel()):
            sagittal += 1
            assert t2.GetSize() == (360, 32, 360)  # slices along x
        dwi = sitk.ReadImage(str(site_b / row.dwi))
        assert dwi.GetSize() == (180, 180, 32) and np.allclose(dwi.GetSpacing(), (1.0, 1.0, 3.0))
        arr, m = sitk.GetArrayFromImage(t2), sitk.GetArrayFromImage(mask) > 0
        assert arr.min() == 40  # the scanner's offset, background included
        lesion_b.append(arr[m].mean())
        # the lesion keeps its physical size (1-4 cm, with the irregular shape's margin)
        d = (6 * m.sum() * np.prod(t2.GetSpacing()) / np.pi) ** (1 / 3)
        assert 5 <= d <= 48, d
    assert sagittal >= 1 and sagittal < len(mb)
    for _, row in ma.iterrows():
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a" / row.t2w)))
        lesion_a.append(arr[sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a" / row["mask"]))) > 0].mean())
    assert np.mean(lesion_b) > 1.4 * np.mean(lesion_a)  # T2W x 1.6 + 40


def test_site_b_passes_validate(site_b):
    res = _cli("validate", "--manifest", site_b / "manifest.csv", "--clinical", site_b / "clinical.csv",
               cwd=site_b.parent)
    assert res.returncode == 0, res.stdout + res.stderr


def test_site_b_is_deterministic_and_sites_are_stamped(tmp_path, site_b):
    import json

    from cervirad.demo import ensure_demo_cohort

    write_demo_cohort(tmp_path / "b", patients=10, seed=3, site="B")
    assert _digest(tmp_path / "b") == _digest(site_b)
    assert json.loads((site_b / "demo.json").read_text())["site"] == "B"
    # a site-A request over the site-B cohort regenerates it as site A; the same request then reuses it
    ensure_demo_cohort(tmp_path / "b", 10, 3)
    assert pd.read_csv(tmp_path / "b" / "manifest.csv").patient_id[0] == "CX001"
    before = (tmp_path / "b" / "manifest.csv").stat().st_mtime_ns
    ensure_demo_cohort(tmp_path / "b", 10, 3, site="A")
    assert (tmp_path / "b" / "manifest.csv").stat().st_mtime_ns == before
    # a stamp from before sites existed is site A
    (tmp_path / "b" / "demo.json").write_text(json.dumps({"patients": 10, "seed": 3, "version": 1}))
    ensure_demo_cohort(tmp_path / "b", 10, 3)
    assert (tmp_path / "b" / "manifest.csv").stat().st_mtime_ns == before


def test_unknown_site_is_refused(tmp_path):
    with pytest.raises(InputError, match="site"):
        write_demo_cohort(tmp_path, patients=10, site="C")
    res = _cli("demo-data", "--out", tmp_path / "c", "--site", "C", cwd=tmp_path)
    assert res.returncode != 0 and "--site" in res.stdout + res.stderr and not (tmp_path / "c").exists()
