"""Clinical encoding (8 variables): the study's real codings, missing values and bad-input messages."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cervirad.config import ClinicalColumnsConfig, DataConfig
from cervirad.errors import CohortValidationError, InputError
from cervirad.features.clinical import (VARIABLES, binary, clinical_problems, encode_clinical, excluded_columns,
                                        figo_rank, parse_age, parse_binary, parse_depth_cm, parse_figo, parse_hpv)
from cervirad.features.stage import column_counts

from ..foundation.helpers import write_small_cohort
from ..foundation.test_validate_cli import assert_one_line_error, run_validate
from .test_stage import extract, fast_params, make_run  # noqa: F401 (fast_params: a fixture)

MISSING = ["Not reported", "Unknown", "NA", "N/A", "", "not available", "  not REPORTED ", "unknown ", "n/a",
           None, float("nan"), np.nan, pd.NA]


def _table(**over):
    row = {"patient_id": "P1", "age": 51, "hpv_status": "positive", "figo_stage": "IIB",
           "lymph_node_metastasis": 1, "lymphovascular_invasion": "no", "invasion_depth_cm": 1.5,
           "chemotherapy": 0, "radiotherapy": "yes"}
    row.update(over)
    return pd.DataFrame([row, {**row, "patient_id": "P2", "hpv_status": "negative", "figo_stage": "IB1",
                               "age": None}])


def test_encoding_of_every_variable():
    out = encode_clinical(_table(), ClinicalColumnsConfig(), "patient_id")
    assert list(out.columns) == ["clin_age", "clin_hpv_status", "clin_figo_stage", "clin_lymph_node_metastasis",
                                 "clin_lymphovascular_invasion", "clin_invasion_depth_cm", "clin_chemotherapy",
                                 "clin_radiotherapy"]
    p1, p2 = out.loc["P1"], out.loc["P2"]
    assert p1.tolist() == [51.0, 1.0, 8.0, 1.0, 0.0, 1.5, 0.0, 1.0]
    assert p2["clin_hpv_status"] == 0.0 and p2["clin_figo_stage"] == 3.0
    assert math.isnan(p2["clin_age"])  # missing stays missing (imputed by the classifier)


# --------------------------------------------------------------------------- FIGO
@pytest.mark.parametrize("value, rank", [
    ("IA1", 1), ("IA2", 2), ("IB1", 3), ("IB2", 4), ("IB3", 5), ("IIA1", 6), ("IIA2", 7), ("IIB", 8),
    ("IIIA", 9), ("IIIB", 10), ("IIIC1", 11), ("IIIC2", 12), ("IVA", 13), ("IVB", 14),
    # case, whitespace, prefixes, roman with lower-case letter
    ("stage IIB", 8), ("Stage iib", 8), ("IIb", 8), ("  iiia ", 9), ("IVb", 14), ("FIGO IB1", 3),
    ("STAGE  IIIC2", 12), ("ib3", 5), ("Ⅲ", 10.5),
    # IIIC evidence suffixes (2018): r = radiology, p = pathology
    ("IIIC1r", 11), ("IIIC1p", 11), ("IIIC1r/p", 11), ("IIIC1 r/p", 11), ("IIIC2p", 12), ("IIIC1(r)", 11),
    # a stage without its sub-stage: mean rank of the sub-stages
    ("IB", 4), ("I", 3), ("IIIC", 11.5), ("III", 10.5), ("IV", 13.5), ("IA", 1.5), ("II", 7),
    # grouped / uncertain: the lowest stage of the group
    ("III/IV", 10.5), ("III-IV", 10.5), ("III or IV", 10.5), ("III, IV", 10.5), ("IB2/IB3", 4),
    ("IIIC1/IIIC2", 11), ("IIB/IIIB", 8), ("IVA/IIIB", 10), ("IIIC1r/IIIC2p", 11),
    # FIGO 2009, tagged: IB1 (<= 4 cm) = 2018 IB1+IB2, IB2 (> 4 cm) = 2018 IB3; the rest as in 2018
    ("IB1 (2009)", 3.5), ("IB2 (2009)", 5), ("FIGO 2009 IB2", 5), ("IIA2 (FIGO 2009)", 7), ("IIIB (2009)", 10),
    ("IB (2009)", 4.25), ("IB2 (2018)", 4), ("FIGO 2018 IIIC1r", 11),
])
def test_figo_codings(value, rank):
    assert parse_figo(value) == float(rank)
    assert figo_rank(value) == float(rank)  # former name


@pytest.mark.parametrize("value", MISSING + ["-", "–", "—", "NaN", "none"])
def test_figo_missing_markers(value):
    assert math.isnan(parse_figo(value))


@pytest.mark.parametrize("value, reason", [
    ("IZ9", "is not a FIGO stage"), ("V", "is not a FIGO stage"), ("IC", "is not a FIGO stage"),
    ("IIB1", "is not a FIGO stage"), ("IIIC3", "is not a FIGO stage"), ("IA3", "is not a FIGO stage"),
    ("Stage", "is not a FIGO stage"), ("III IV", "is not a FIGO stage"), ("IIBr", "r/p applies to IIIC only"),
    ("IB3 (2009)", "not a FIGO 2009 stage"), ("IIIC1 (2009)", "not a FIGO 2009 stage"),
    ("IB2 2009/2018", "two editions"), (2, "is not a FIGO stage"), ("2B", "is not a FIGO stage"),
])
def test_figo_refused(value, reason):
    with pytest.raises(ValueError, match=reason):
        parse_figo(value)


# --------------------------------------------------------------------------- HPV and binary
POSITIVE = ["yes", "Yes", " YES ", "y", "pos", "POS", "positive", "Positive", "+", "1", "1.0", "true", "TRUE", 1, 1.0,
            True, np.int64(1), np.float64(1.0)]
NEGATIVE = ["no", "No", "n", "neg", "negative", "NEGATIVE", "-", "−", "–", "0", "0.0", "false", "False", 0, 0.0,
            False, np.int64(0)]


@pytest.mark.parametrize("value", POSITIVE + ["HPV+", "hpv positive", "HPV: pos", "Detected", "hpv 1"])
def test_hpv_positive(value):
    assert parse_hpv(value) == 1.0


@pytest.mark.parametrize("value", NEGATIVE + ["HPV-", "HPV−", "hpv negative", "not detected", "HPV neg"])
def test_hpv_negative(value):
    assert parse_hpv(value) == 0.0


@pytest.mark.parametrize("value", POSITIVE)
def test_binary_positive(value):
    assert parse_binary(value) == 1.0
    assert binary(value) == 1.0  # former name


@pytest.mark.parametrize("value", NEGATIVE)
def test_binary_negative(value):
    assert parse_binary(value) == 0.0


@pytest.mark.parametrize("parse", [parse_binary, parse_hpv])
@pytest.mark.parametrize("value", MISSING)
def test_yes_no_missing_markers(parse, value):
    assert math.isnan(parse(value))
    assert math.isnan(parse_hpv("HPV unknown"))


@pytest.mark.parametrize("parse, value", [(parse_binary, "maybe"), (parse_binary, 2), (parse_binary, "HPV+"),
                                          (parse_binary, "+-"), (parse_hpv, "unclear"), (parse_hpv, "HPV"),
                                          (parse_hpv, 0.5), (parse_hpv, "16/18")])
def test_yes_no_refused(parse, value):
    with pytest.raises(ValueError, match="is not"):
        parse(value)


# --------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("value, cm", [(1.5, 1.5), ("1.5", 1.5), ("1.5 cm", 1.5), ("1.5cm", 1.5), ("1.5 CM", 1.5),
                                       ("15 mm", 1.5), ("15mm", 1.5), ("4 mm", 0.4), ("1,5 cm", 1.5), (2, 2.0),
                                       ("0", 0.0), (np.float64(0.8), 0.8)])
def test_depth_with_unit(value, cm):
    assert parse_depth_cm(value) == pytest.approx(cm, abs=1e-12)


@pytest.mark.parametrize("value, years", [(51, 51.0), ("51", 51.0), ("51 y", 51.0), ("51 years", 51.0),
                                          (51.0, 51.0), (" 62 ", 62.0)])
def test_age(value, years):
    assert parse_age(value) == years


@pytest.mark.parametrize("parse", [parse_age, parse_depth_cm])
@pytest.mark.parametrize("value", MISSING + ["-", "–"])
def test_number_missing_markers(parse, value):
    assert math.isnan(parse(value))


@pytest.mark.parametrize("parse, value", [(parse_depth_cm, "1.5 m"), (parse_depth_cm, "-1"), (parse_depth_cm, "deep"),
                                          (parse_depth_cm, "1.5 inch"), (parse_depth_cm, float("inf")),
                                          (parse_age, "fifty"), (parse_age, "51 mm"), (parse_age, -3),
                                          (parse_age, True)])
def test_numbers_refused(parse, value):
    with pytest.raises(ValueError, match="is not"):
        parse(value)


# --------------------------------------------------------------------------- the table
def _real_sheet():
    """A sheet in the study's own codings, every cell of P3 missing."""
    return pd.DataFrame({
        "patient_id": ["P1", "P2", "P3"],
        "age": ["51", "62 y", "Not reported"],
        "hpv_status": ["+", "−", "Unknown"],
        "figo_stage": ["IIIC1r/p", "III/IV", "NA"],
        "lymph_node_metastasis": ["yes", "-", "N/A"],
        "lymphovascular_invasion": ["TRUE", "0", ""],
        "invasion_depth_cm": ["1.5 cm", "15 mm", "not available"],
        "chemotherapy": ["Y", "-", "not reported"],  # "-" in a yes/no column: negative
        "radiotherapy": [1, 0, None],
    })


def test_real_sheet_encodes_with_missing_as_nan():
    out = encode_clinical(_real_sheet(), ClinicalColumnsConfig(), "patient_id")
    assert out.loc["P1"].tolist() == [51.0, 1.0, 11.0, 1.0, 1.0, 1.5, 1.0, 1.0]
    assert out.loc["P2"].tolist() == [62.0, 0.0, 10.5, 0.0, 0.0, 1.5, 0.0, 0.0]
    assert out.loc["P3"].isna().all()
    assert all(out[c].dtype == float for c in out.columns)
    assert clinical_problems(_real_sheet(), ClinicalColumnsConfig(), "patient_id") == []


def test_missing_indicators_on_and_off():
    off = encode_clinical(_real_sheet(), ClinicalColumnsConfig(), "patient_id")
    assert not any(c.endswith("_missing") for c in off.columns)
    on = encode_clinical(_real_sheet(), ClinicalColumnsConfig(), "patient_id", missing_indicators=True)
    flags = [f"clin_{v}_missing" for v in VARIABLES]
    assert list(on.columns) == list(off.columns) + flags
    pd.testing.assert_frame_equal(on[off.columns], off)
    assert on.loc[["P1", "P2"], flags].to_numpy().sum() == 0
    assert on.loc["P3", flags].tolist() == [1.0] * 8
    counts = column_counts(list(on.columns))
    assert counts["clinical"] == 16 and counts["total"] == 16


def test_column_mapping_from_config():
    table = _table().rename(columns={"age": "Age_years"})
    out = encode_clinical(table, ClinicalColumnsConfig(age="Age_years"), "patient_id")
    assert out.loc["P1", "clin_age"] == 51.0


def test_missing_column_is_one_line_error():
    table = _table().drop(columns=["figo_stage"])
    with pytest.raises(InputError, match=r"lacks column 'figo_stage' \(figo_stage\); .*features.clinical_columns"):
        encode_clinical(table, ClinicalColumnsConfig(), "patient_id")


def test_bad_value_names_case_column_value_and_accepted_list():
    table = _table(figo_stage="IZ9")
    table.loc[1, "figo_stage"] = "V"
    with pytest.raises(InputError) as e:
        encode_clinical(table, ClinicalColumnsConfig(), "patient_id")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("Clinical value for case 'P1', column 'figo_stage': 'IZ9' is not a FIGO stage; accepted: "
                          "IA1 … IVB (2009/2018")
    assert "grouped like 'III/IV'" in msg and "'Not reported'" in msg and "(+1 more;" in msg  # P2's 'V'


@pytest.mark.parametrize("column, value, needle", [
    ("hpv_status", "unclear", "'unclear' is not an HPV status; accepted: yes/no"),
    ("lymph_node_metastasis", "maybe", "'maybe' is not a yes/no value; accepted: yes/no"),
    ("invasion_depth_cm", "2 inch", "'2 inch' is not a depth in cm or mm; accepted: a non-negative depth in cm"),
    ("age", "old", "'old' is not a number of years; accepted:"),
])
def test_bad_value_per_kind(column, value, needle):
    with pytest.raises(InputError, match=r"case 'P1', column '" + column + "': " + needle.replace("(", r"\(")):
        encode_clinical(_table(**{column: value}), ClinicalColumnsConfig(), "patient_id")


def test_renamed_column_is_named_with_its_variable():
    table = _table(hpv_status="unclear").rename(columns={"hpv_status": "HPV"})
    with pytest.raises(InputError, match=r"case 'P1', column 'HPV' \(hpv_status\): 'unclear'"):
        encode_clinical(table, ClinicalColumnsConfig(hpv_status="HPV"), "patient_id")


def test_clinical_problems_lists_every_bad_cell_without_raising():
    sheet = _real_sheet()
    sheet.loc[0, "figo_stage"] = "IZ9"
    sheet.loc[1, "hpv_status"] = "weak"
    sheet.loc[2, "invasion_depth_cm"] = "3 m"
    probs = clinical_problems(sheet.drop(columns=["age"]), ClinicalColumnsConfig(), "patient_id")
    assert len(probs) == 4 and all("\n" not in p for p in probs)
    assert probs[0].startswith("Clinical table lacks column 'age' (age)")  # absent: a problem at validate
    assert probs[1].startswith("Clinical value for case 'P2', column 'hpv_status': 'weak'")
    assert probs[2].startswith("Clinical value for case 'P1', column 'figo_stage': 'IZ9'")
    assert probs[3].startswith("Clinical value for case 'P3', column 'invasion_depth_cm': '3 m'")


def test_treatment_excluded_by_default():
    assert excluded_columns(False) == ["clin_chemotherapy", "clin_radiotherapy"]
    assert excluded_columns(True) == []
    assert excluded_columns(False, missing_indicators=True) == [
        "clin_chemotherapy", "clin_radiotherapy", "clin_chemotherapy_missing", "clin_radiotherapy_missing"]
    assert excluded_columns(True, missing_indicators=True) == []


# --------------------------------------------------------------------------- validate
def _cohort_with_clinical(root, cells):
    manifest, clinical = write_small_cohort(root, n=4)
    table = pd.read_csv(clinical)
    table["hpv_status"] = ["positive", "HPV-", "Not reported", "+"]
    table["figo_stage"] = ["IIB", "IIIC1r/p", "III/IV", "Unknown"]
    table["invasion_depth_cm"] = ["1.5 cm", "15 mm", "Not reported", ""]
    for (pid, col), v in cells.items():
        table.loc[table["patient_id"] == pid, col] = v
    table.to_csv(clinical, index=False)
    return manifest, clinical


def test_validate_lists_every_clinical_problem(tmp_path):
    from cervirad.io import load_cohort
    from cervirad.validate import validate_cohort

    manifest, clinical = _cohort_with_clinical(tmp_path / "c", {("P001", "figo_stage"): "IZ9",
                                                                   ("P003", "hpv_status"): "weak"})
    cohort = load_cohort(manifest, clinical)
    with pytest.raises(CohortValidationError) as e:
        validate_cohort(cohort, DataConfig(), require_labels=False, n_threads=1)
    assert [p.split(":")[0] for p in e.value.problems] == [
        "Clinical value for case 'P003', column 'hpv_status'", "Clinical value for case 'P001', column 'figo_stage'"]
    # a renamed column is found through features.clinical_columns
    pd.read_csv(clinical).rename(columns={"figo_stage": "FIGO"}).to_csv(clinical, index=False)
    with pytest.raises(CohortValidationError) as e:
        validate_cohort(load_cohort(manifest, clinical), DataConfig(), require_labels=False, n_threads=1,
                        clinical_columns=ClinicalColumnsConfig(figo_stage="FIGO"))
    assert "column 'FIGO' (figo_stage): 'IZ9'" in e.value.problems[1]


def test_cli_validate_bad_figo_exits_2(tmp_path):
    manifest, clinical = _cohort_with_clinical(tmp_path / "c", {("P002", "figo_stage"): "IZ9"})
    assert_one_line_error(run_validate(tmp_path, manifest, clinical),
                          "case 'P002', column 'figo_stage': 'IZ9' is not a FIGO stage; accepted: IA1 … IVB")
    assert not (tmp_path / "run" / "fingerprint.json").exists()


def test_cli_validate_accepts_not_reported(tmp_path):
    manifest, clinical = _cohort_with_clinical(tmp_path / "c", {("P000", "figo_stage"): "Not reported",
                                                                   ("P001", "hpv_status"): "Not reported"})
    res = run_validate(tmp_path, manifest, clinical)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "run" / "fingerprint.json").is_file()


def test_stage_writes_nan_and_indicators(tmp_path, tiny_cfg, tiny_run, fast_params):
    """The features stage on a sheet with "Not reported" cells and clinical_missing_indicators on."""
    import json

    table = pd.read_csv(tiny_run.path / "cohort" / "clinical.csv", dtype=str)
    table.loc[0, ["age", "figo_stage", "chemotherapy"]] = ["Not reported", "Unknown", "N/A"]
    table.loc[1, "hpv_status"] = "HPV−"
    table.to_csv(tmp_path / "clinical.csv", index=False)
    cfg, run = make_run(tmp_path / "run", tiny_cfg, tiny_run, f"features.radiomics_params={fast_params}",
                        f"data.clinical={tmp_path / 'clinical.csv'}", "features.clinical_missing_indicators=true")
    out = extract(cfg, run)
    feats = pd.read_parquet(out / "features.parquet").set_index("patient_id")
    first, second = str(table.loc[0, "patient_id"]), str(table.loc[1, "patient_id"])
    assert math.isnan(feats.loc[first, "clin_age"]) and math.isnan(feats.loc[first, "clin_figo_stage"])
    flags = ["clin_age_missing", "clin_figo_stage_missing", "clin_chemotherapy_missing"]
    assert feats.loc[first, flags].tolist() == [1] * 3
    assert feats.loc[second, "clin_hpv_status"] == 0.0 and feats.loc[second, "clin_hpv_status_missing"] == 0
    assert json.loads((out / "column_counts.json").read_text())["clinical"] == 16
    cols = json.loads((out / "columns.json").read_text())
    assert "clin_age_missing" in cols["predictors"]
    assert {"clin_chemotherapy_missing", "clin_radiotherapy_missing"} <= set(cols["excluded_from_predictors"])
    assert not {"clin_chemotherapy_missing", "clin_radiotherapy_missing"} & set(cols["predictors"])
