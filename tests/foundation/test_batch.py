"""data.batch_column (issue 24): the scanner from a table column or DICOM headers; validate lists batches."""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from cervirad.batch import NO_HEADER, batch_labels, batch_summary, dicom_scanner, read_batches
from cervirad.config import DataConfig
from cervirad.demo import SCANNER_NAMES, write_demo_cohort
from cervirad.errors import CohortValidationError, InputError
from cervirad.io import load_cohort
from cervirad.validate import validate_cohort
from tests.foundation.helpers import write_small_cohort


def _cohort(tmp_path, n=6):
    manifest, clinical = write_small_cohort(tmp_path / "c", n=n)
    return manifest, clinical


def test_column_of_the_clinical_table_or_the_manifest(tmp_path):
    manifest, clinical = _cohort(tmp_path)
    c = pd.read_csv(clinical)
    c["site"] = ["A", "A", "B", "B", "B", "A"]
    c.to_csv(clinical, index=False)
    m = pd.read_csv(manifest)
    m["protocol"] = ["p1"] * 3 + ["p2"] * 3
    m.to_csv(manifest, index=False)
    cohort = load_cohort(manifest, clinical, sequences=("t2w",))
    assert batch_labels(DataConfig(batch_column="site"), cohort) == dict(zip(c.patient_id, c.site))
    assert set(batch_labels(DataConfig(batch_column="protocol"), cohort).values()) == {"p1", "p2"}
    assert batch_labels(DataConfig(), cohort) is None
    with pytest.raises(InputError, match="neither a column"):
        batch_labels(DataConfig(batch_column="scanner"), cohort)
    c.loc[2, "site"] = None
    c.to_csv(clinical, index=False)
    with pytest.raises(InputError, match="Patient 'P002' has no batch"):
        batch_labels(DataConfig(batch_column="site"), load_cohort(manifest, clinical, sequences=("t2w",)))


def _dicom_series(folder, manufacturer="SIEMENS", model="Skyra", field="3.0"):
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(3):
        sl = sitk.GetImageFromArray(np.full((8, 8), 100 + z, np.int16))
        for tag, value in (("0008|0070", manufacturer), ("0008|1090", model), ("0018|0087", field),
                           ("0020|000e", "1.2.826.0.1.3680043.2.1125.1"), ("0020|0013", str(z + 1)),
                           ("0020|0032", f"0\\0\\{z * 4}"), ("0008|0060", "MR")):
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"s{z}.dcm"))
        writer.Execute(sl)
    return folder


def test_auto_reads_dicom_headers_and_falls_back_for_nifti(tmp_path, caplog):
    series = _dicom_series(tmp_path / "dcm")
    assert dicom_scanner(series) == "SIEMENS Skyra 3T"
    manifest, clinical = _cohort(tmp_path, n=3)
    cohort = load_cohort(manifest, clinical, sequences=("t2w",))
    cohort.patients[0].images["t2w"] = series  # one DICOM patient, two NIfTI
    labels, problems, warnings = read_batches(DataConfig(batch_column="auto"), cohort)
    assert not problems and labels["P000"] == "SIEMENS Skyra 3T" and labels["P001"] == NO_HEADER
    assert len(warnings) == 1 and "2 of 3 patient(s)" in warnings[0] and "NIfTI" in warnings[0]


def test_summary_warns_below_the_minimum():
    sizes, warnings = batch_summary({f"p{i}": "big" if i < 25 else "small" for i in range(30)}, 20)
    assert sizes == {"big": 25, "small": 5}
    assert len(warnings) == 1 and "batch 'small' has 5 patient(s)" in warnings[0]


def test_validate_lists_batches_in_the_fingerprint_only_when_asked(tmp_path, caplog):
    manifest, clinical = _cohort(tmp_path)
    c = pd.read_csv(clinical)
    c["large_cell"] = [0, 1, 0, 1, 0, 1]
    c["site"] = ["A", "A", "A", "A", "B", "B"]
    c.to_csv(clinical, index=False)
    cohort = load_cohort(manifest, clinical, sequences=("t2w",))
    data = DataConfig(sequences=("t2w",))
    assert "batches" not in validate_cohort(cohort, data, n_threads=1)
    with caplog.at_level(logging.INFO):
        fp = validate_cohort(cohort, replace(data, batch_column="site", batch_min_patients=3), n_threads=1)
    assert fp["batches"] == {"A": 4, "B": 2} and fp["batch_column"] == "site"
    assert any("batch 'B' has 2 patient(s)" in w for w in fp["warnings"])
    assert "2 batch(es) by data.batch_column 'site': A 4, B 2" in caplog.text
    with pytest.raises(CohortValidationError):
        validate_cohort(cohort, replace(data, batch_column="nothing"), n_threads=1)


def test_two_scanner_demo_changes_scanner_two_only_and_confounds_class(tmp_path):
    from cervirad.demo import SECOND_SCANNER_SHARE, SITES, _patient_volumes, scanner_of

    m2, c2 = write_demo_cohort(tmp_path / "two", patients=10, seed=3, scanners=2)
    b, m = pd.read_csv(c2), pd.read_csv(m2).set_index("patient_id")
    assert set(b["scanner"]) == set(SCANNER_NAMES)
    for pid, scanner in zip(b.patient_id, b.scanner):
        img = sitk.ReadImage(str(m2.parent / m.loc[pid, "t2w"]))
        assert np.allclose(img.GetSpacing(), (0.7, 0.7, 4.0) if scanner == SCANNER_NAMES[0] else (0.9, 0.9, 4.8))
    # a first-scanner patient is the one-scanner cohort's patient: the same random stream and site
    i = int(np.where(b.scanner == SCANNER_NAMES[0])[0][0])
    row = b.iloc[i]
    cat = 4 * row.large_cell + 2 * row.non_keratinizing + row.adenocarcinoma
    vols, _, _ = _patient_volumes(np.random.default_rng([3, i]), int(cat), SITES["A"])
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(m2.parent / m.loc[row.patient_id, "t2w"]))),
                          vols["t2w"])
    with pytest.raises(InputError, match="site A"):
        write_demo_cohort(tmp_path / "x", patients=10, seed=3, site="B", scanners=2)
    cats = np.repeat(list(SECOND_SCANNER_SHARE), 400)
    share = pd.Series(scanner_of(cats, 7)).groupby(cats).mean()
    assert share.max() - share.min() > 0.3  # the class mix differs by scanner
