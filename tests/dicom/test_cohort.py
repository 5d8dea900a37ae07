"""A DICOM tree as a cohort: index-dicom, several series in one folder, contour masks through
validate / extract-features, bad contour files (exit 2, one line each), no identity leaks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .conftest import BIRTH, NAME, SMALL, build_tree, copy_rtstruct, one_error_line, sts_nifti

pytestmark = pytest.mark.realdata
RULE = ["--series", "t2w=MR_T1"]


@pytest.fixture
def tree(tmp_path):
    return build_tree(tmp_path / "pacs", (SMALL,))


def test_index_dicom_picks_the_series_and_the_rtstruct_among_decoys(tree, tmp_path, cli):
    out = tmp_path / "manifest.csv"
    code, stdout, err = cli("index-dicom", tree, "--out", out, *RULE, "--roi", "GTV.*")
    assert code == 0, err
    m = pd.read_csv(out, dtype=str)
    assert list(m.columns) == ["patient_id", "t2w", "mask"] and list(m.patient_id) == [SMALL]
    folder, _, uid = m.t2w[0].rpartition("#")
    assert Path(folder) == tree / SMALL / "study" / "mr"  # not the localiser, and named by UID (an 'ADC map' beside)
    import pydicom

    real = pydicom.dcmread(sorted((tree / SMALL / "study" / "mr").glob("0*.dcm"))[0], stop_before_pixels=True)
    assert uid == real.SeriesInstanceUID
    assert Path(m["mask"][0]) == tree / SMALL / "rt" / "RS.dcm"  # not the RTSTRUCT of organs
    assert NAME not in out.read_text() and BIRTH not in out.read_text()
    (tree / SMALL).rename(tree / "anonymous_17")  # ids: folder names, or PatientID when asked for
    code, _, err = cli("index-dicom", tree, "--out", tmp_path / "by_id.csv", *RULE, "--roi", "GTV.*",
                       "--ids", "patient-id")
    assert code == 0, err
    assert list(pd.read_csv(tmp_path / "by_id.csv", dtype=str).patient_id) == [SMALL]


def test_index_dicom_ambiguity_is_one_line_per_patient_and_skip_incomplete_leaves_them_out(tree, tmp_path, cli):
    build_tree(tree, ("STS_003",))
    (tree / "STS_003" / "rt" / "RS.dcm").unlink()
    (tree / "STS_003" / "rt" / "RS_organs.dcm").unlink()
    out = tmp_path / "m.csv"
    code, _, err = cli("index-dicom", tree, "--out", out, *RULE)  # no --roi: two RTSTRUCTs on STS_002
    assert code == 2 and not out.exists()
    lines = [ln for ln in err.splitlines() if ln.startswith("index-dicom: Patient")]
    assert len(lines) == 2, err
    assert "2 RTSTRUCT/SEG files" in lines[0] and "GTV_Mass_MR_T1" in lines[0] and "Bladder" in lines[0]
    assert "STS_003" in lines[1] and "no RTSTRUCT/SEG" in lines[1]
    code, stdout, err = cli("index-dicom", tree, "--out", out, *RULE, "--roi", "gtv_mass_mr_t1", "--skip-incomplete")
    assert code == 0, err
    assert list(pd.read_csv(out, dtype=str).patient_id) == [SMALL] and "1 left out" in stdout
    assert "STS_003" in err
    code, _, err = cli("index-dicom", tree, "--out", out, *RULE, "--roi", "GTV.*")
    assert code == 2 and "already exists" in err  # never over an existing file without --force
    one_error_line(cli("index-dicom", tree, "--out", tree / "m.csv", *RULE), "inside the DICOM tree")


def test_a_folder_of_two_series_is_refused_unless_the_manifest_names_one(tree, tmp_path, cli):
    mr = tree / SMALL / "study" / "mr"
    rows = {"patient_id": [SMALL], "t2w": [str(mr)], "mask": [str(tree / SMALL / "rt" / "RS.dcm")]}
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    line = one_error_line(cli("validate", "--manifest", tmp_path / "m.csv", "--run-dir", tmp_path / "r1"),
                          "Several DICOM series", "'ADC map' (35 file(s))", "'IBSI_1_STS_002_MR_T1_image' (35 file(s))",
                          "folder#SeriesInstanceUID")
    assert line.count("file(s)") == 2
    import pydicom

    uid = pydicom.dcmread(sorted(mr.glob("0*.dcm"))[0], stop_before_pixels=True).SeriesInstanceUID
    pd.DataFrame({**rows, "series": [uid]}).to_csv(tmp_path / "m2.csv", index=False)  # a 'series' column
    code, out, err = cli("validate", "--manifest", tmp_path / "m2.csv", "--run-dir", tmp_path / "r2")
    assert code == 0, err
    pd.DataFrame({**rows, "t2w": [f"{mr}#{uid}"]}).to_csv(tmp_path / "m3.csv", index=False)  # folder#UID
    code, out, err = cli("validate", "--manifest", tmp_path / "m3.csv", "--run-dir", tmp_path / "r3")
    assert code == 0, err
    pd.DataFrame({**rows, "t2w": [f"{mr}#1.2.3"]}).to_csv(tmp_path / "m4.csv", index=False)
    one_error_line(cli("validate", "--manifest", tmp_path / "m4.csv", "--run-dir", tmp_path / "r4"),
                   "holds no series 1.2.3")


# --------------------------------------------------------------------------- bad contour files
def _bad_rtstruct(kind: str, rs: Path, tmp_path: Path) -> Path:
    import pydicom
    from pydicom.uid import generate_uid

    if kind == "other series":
        return copy_rtstruct(rs, tmp_path / "bad.dcm", series_uid=generate_uid())
    if kind == "truncated":
        data = rs.read_bytes()
        (tmp_path / "bad.dcm").write_bytes(data[: len(data) // 2])
        return tmp_path / "bad.dcm"
    ds = pydicom.dcmread(rs)
    if kind == "empty ROI":
        del ds.ROIContourSequence[0].ContourSequence
    elif kind == "one point":
        c = ds.ROIContourSequence[0].ContourSequence[3]
        c.ContourData, c.NumberOfContourPoints = list(c.ContourData)[:3], 1
    ds.save_as(tmp_path / "bad.dcm")
    return tmp_path / "bad.dcm"


def _two_segment_seg(series: Path, path: Path) -> Path:
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from cervirad.dicom.series import read_series

    _, _, files = read_series(series)
    arr = np.zeros((len(files), 90, 115, 2), np.uint8)
    arr[10:12, 20:30, 20:30, 0] = arr[14:16, 40:50, 40:50, 1] = 1
    algo = hd.AlgorithmIdentificationSequence(name="test", version="1", family=codes.cid7162.ArtificialIntelligence)
    segs = [hd.seg.SegmentDescription(segment_number=i + 1, segment_label=label,
                                      segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                                      segmented_property_type=codes.SCT.Neoplasm,
                                      algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                      algorithm_identification=algo) for i, label in enumerate(("GTVp", "GTVn"))]
    hd.seg.Segmentation(source_images=[pydicom.dcmread(f) for f in files], pixel_array=arr,
                        segmentation_type="BINARY", segment_descriptions=segs, series_instance_uid=hd.UID(),
                        series_number=5, sop_instance_uid=hd.UID(), instance_number=1, manufacturer="t",
                        manufacturer_model_name="t", software_versions="1", device_serial_number="1").save_as(path)
    return path


@pytest.mark.parametrize("kind, needles", [
    ("other series", ("references another series",)),
    ("empty ROI", ("Empty ROI 'GTV_Mass_MR_T1'",)),
    ("one point", ("Degenerate contour", "has 1 point(s)")),
    ("truncated", ("Damaged DICOM file for case 'STS_002'", "bad.dcm", "truncated")),
    ("two segments", ("Ambiguous segment", "'GTVp', 'GTVn'", "data.mask_roi")),
    ("unknown ROI", ("No single ROI 'Bladder'", "'GTV_Mass_MR_T1'")),
])
def test_bad_contour_files_exit_2_with_one_line(kind, needles, small_patient, tmp_path, cli):
    series, rs = small_patient
    extra = []
    if kind == "two segments":
        mask = _two_segment_seg(series, tmp_path / "bad.dcm")
    elif kind == "unknown ROI":
        mask, extra = rs, ["--set", "data.mask_roi=Bladder"]
    else:
        mask = _bad_rtstruct(kind, rs, tmp_path)
    pd.DataFrame({"patient_id": [SMALL], "t2w": [str(series)], "mask": [str(mask)]}).to_csv(tmp_path / "m.csv",
                                                                                            index=False)
    one_error_line(cli("validate", "--manifest", tmp_path / "m.csv", "--run-dir", tmp_path / "run", *extra),
                   *needles)


# --------------------------------------------------------------------------- the DICOM route = the NIfTI route
RADIOMICS = """imageType:
  Original: {}
featureClass:
  shape:
  firstorder:
  glcm:
setting:
  binCount: 32
  label: 1
"""


def _features(cli, tmp_path: Path, manifest: Path, name: str) -> pd.DataFrame:
    run = tmp_path / name
    common = ["--run-dir", run, "--set", "data.source=manifest", "--set", f"data.manifest={manifest}",
              "--set", "data.sequences=[t2w]", "--set", f"features.radiomics_params={tmp_path / 'rad.yaml'}",
              "--set", "features.wavelet_subbands=[]", "--set", "execution.n_jobs=1"]
    from tests.conftest import REPO

    for command in ("validate", "extract-features"):
        code, _, err = cli(command, "--config", REPO / "configs" / "demo.yaml", *common)
        assert code == 0, err
    return pd.read_parquet(run / "features" / "features.parquet").set_index("patient_id")


@pytest.mark.slow
def test_index_dicom_manifest_gives_the_nifti_features_and_leaks_no_identity(tree, tmp_path, cli):
    (tmp_path / "rad.yaml").write_text(RADIOMICS)
    code, _, err = cli("index-dicom", tree, "--out", tmp_path / "dicom.csv", *RULE, "--roi", "GTV.*")
    assert code == 0, err
    nifti = sts_nifti() / SMALL
    pd.DataFrame({"patient_id": [SMALL], "t2w": [str(nifti / "MR_T1_image.nii.gz")],
                  "mask": [str(nifti / "MR_T1_mask.nii.gz")]}).to_csv(tmp_path / "nifti.csv", index=False)
    a = _features(cli, tmp_path, tmp_path / "dicom.csv", "run_dicom")
    b = _features(cli, tmp_path, tmp_path / "nifti.csv", "run_nifti")
    cols = [c for c in b.columns if c.startswith("original_") or c.startswith("hist_")]
    assert len(cols) > 30 and list(a.columns) == list(b.columns)
    # within 1e-6 relative (measured: <= 2.4e-8, the NIfTI header's float32 spacing vs DICOM's decimal strings)
    np.testing.assert_allclose(a.loc[SMALL, cols].astype(float), b.loc[SMALL, cols].astype(float), rtol=1e-6, atol=0)
    # every file of the DICOM run (run.json, logs, tables, cached masks): no planted identity
    for f in (tmp_path / "run_dicom").rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            for secret in (NAME.encode(), BIRTH.encode()):
                assert secret not in data, f
