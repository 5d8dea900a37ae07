"""The paper's 8 clinical variables, encoded as numbers for learning (SPEC §1).

Encoding (column ``clin_<variable>``; a missing cell stays NaN for the classifier's imputer):

==========================  ===============================================================
age                         years, as given
hpv_status                  1 = positive, 0 = negative
figo_stage                  FIGO 2018 ordinal: IA1=1, IA2=2, IB1=3, IB2=4, IB3=5, IIA1=6,
                            IIA2=7, IIB=8, IIIA=9, IIIB=10, IIIC1=11, IIIC2=12, IVA=13,
                            IVB=14; a stage given without its sub-stage (e.g. ``IB``) gets the
                            mean rank of its sub-stages (IB -> 4); a ``Stage`` prefix and case
                            are ignored
lymph_node_metastasis       1 = yes, 0 = no
lymphovascular_invasion     1 = yes, 0 = no
invasion_depth_cm           centimetres, as given
chemotherapy                1 = yes, 0 = no  (treatment: baseline data, not a predictor unless
radiotherapy                1 = yes, 0 = no   features.include_treatment is true)
==========================  ===============================================================

Binary cells accept 1/0, true/false, yes/no, positive/negative, pos/neg, +/- (any case).
"""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from ..config import ClinicalColumnsConfig
from ..errors import InputError

VARIABLES = ("age", "hpv_status", "figo_stage", "lymph_node_metastasis", "lymphovascular_invasion",
             "invasion_depth_cm", "chemotherapy", "radiotherapy")
TREATMENT = ("chemotherapy", "radiotherapy")
FIGO_2018 = ("IA1", "IA2", "IB1", "IB2", "IB3", "IIA1", "IIA2", "IIB", "IIIA", "IIIB", "IIIC1", "IIIC2",
             "IVA", "IVB")
FIGO_RANK = {s: i + 1 for i, s in enumerate(FIGO_2018)}
_TRUE = {"1", "1.0", "true", "yes", "y", "positive", "pos", "+"}
_FALSE = {"0", "0.0", "false", "no", "n", "negative", "neg", "-"}


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()) \
        or v is pd.NA


def figo_rank(stage: str) -> float:
    """Ordinal rank of a FIGO 2018 stage (module docstring); ValueError for an unknown stage."""
    s = re.sub(r"\s+", "", str(stage).upper())
    s = s[len("STAGE"):] if s.startswith("STAGE") else s
    if s in FIGO_RANK:
        return float(FIGO_RANK[s])
    # a stage without sub-stage covers the sub-stages it prefixes at a boundary:
    # "I" covers IA1..IB3 but not IIA1 or IVA, "IIIC" covers IIIC1 and IIIC2
    subs = [r for k, r in FIGO_RANK.items() if s and k.startswith(s) and k[len(s)] not in "IV"]
    if not subs:
        raise ValueError(f"unknown FIGO stage {stage!r}")
    return float(np.mean(subs))


def binary(v) -> float:
    """1.0 / 0.0 for the accepted spellings (module docstring); ValueError otherwise."""
    if isinstance(v, (bool, np.bool_)):
        return float(v)
    s = str(v).strip().lower()
    if s in _TRUE:
        return 1.0
    if s in _FALSE:
        return 0.0
    raise ValueError(f"{v!r} is not a yes/no value")


def _number(v) -> float:
    return float(v)


ENCODERS = {"age": _number, "hpv_status": binary, "figo_stage": figo_rank, "lymph_node_metastasis": binary,
            "lymphovascular_invasion": binary, "invasion_depth_cm": _number, "chemotherapy": binary,
            "radiotherapy": binary}


def encode_clinical(clinical: pd.DataFrame, columns: ClinicalColumnsConfig, id_column: str) -> pd.DataFrame:
    """``clin_*`` columns (index: patient id) for every row of ``clinical``.

    A missing column or an unreadable cell is a one-line :class:`InputError` naming the column,
    the patient and the fix.
    """
    out = pd.DataFrame(index=pd.Index(clinical[id_column].astype(str), name=id_column))
    for var in VARIABLES:
        col = getattr(columns, var)
        if col not in clinical.columns:
            raise InputError(f"Clinical table lacks column '{col}' ({var}); add it or set "
                             f"features.clinical_columns.{var} to the column that holds it "
                             f"(columns: {', '.join(map(str, clinical.columns))}).")
        values = []
        for pid, v in zip(out.index, clinical[col]):
            if _missing(v):
                values.append(np.nan)
                continue
            try:
                values.append(ENCODERS[var](v))
            except (ValueError, TypeError) as e:
                raise InputError(f"Invalid clinical value for case '{pid}': column '{col}' ({var}) is {v!r} "
                                 f"({e}); correct the clinical table (see cervirad.features.clinical for "
                                 "accepted values).") from None
        out[f"clin_{var}"] = values
    return out


def excluded_columns(include_treatment: bool) -> list[str]:
    """Clinical columns kept in the table but not used as predictors."""
    return [] if include_treatment else [f"clin_{v}" for v in TREATMENT]
