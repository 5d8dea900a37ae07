"""Clinical encoding (8 variables) and its bad-input messages."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from cervirad.config import ClinicalColumnsConfig
from cervirad.errors import InputError
from cervirad.features.clinical import binary, encode_clinical, excluded_columns, figo_rank


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


def test_figo_ranks():
    assert [figo_rank(s) for s in ("IA1", "IB3", "IIIC2", "IVB")] == [1.0, 5.0, 12.0, 14.0]
    assert figo_rank("Stage iib") == 8.0
    assert figo_rank("IB") == 4.0  # mean of IB1..IB3
    assert figo_rank("I") == 3.0  # mean of IA1..IB3, not IIA1 or IVA
    assert figo_rank("IIIC") == 11.5
    with pytest.raises(ValueError, match="unknown FIGO stage"):
        figo_rank("V")


def test_binary_spellings():
    assert [binary(v) for v in (1, "1", True, "Yes", "POS", "+")] == [1.0] * 6
    assert [binary(v) for v in (0, "0.0", False, "no", "Negative", "-")] == [0.0] * 6
    with pytest.raises(ValueError):
        binary("maybe")


def test_column_mapping_from_config():
    table = _table().rename(columns={"age": "Age_years"})
    out = encode_clinical(table, ClinicalColumnsConfig(age="Age_years"), "patient_id")
    assert out.loc["P1", "clin_age"] == 51.0


def test_missing_column_is_one_line_error():
    table = _table().drop(columns=["figo_stage"])
    with pytest.raises(InputError, match=r"lacks column 'figo_stage' \(figo_stage\); .*features.clinical_columns"):
        encode_clinical(table, ClinicalColumnsConfig(), "patient_id")


def test_bad_value_names_the_patient():
    with pytest.raises(InputError, match=r"case 'P1': column 'hpv_status' \(hpv_status\) is 'unclear'"):
        encode_clinical(_table(hpv_status="unclear"), ClinicalColumnsConfig(), "patient_id")


def test_treatment_excluded_by_default():
    assert excluded_columns(False) == ["clin_chemotherapy", "clin_radiotherapy"]
    assert excluded_columns(True) == []
