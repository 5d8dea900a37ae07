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
