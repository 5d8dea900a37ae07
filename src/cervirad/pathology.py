"""The pathology label: ``Pathologic_typing`` = 4·large + 2·non-keratinizing + 1·adenocarcinoma
(SPEC §1), categories 0..7 (paper Table 7), from three 0/1 columns of the clinical table."""
from __future__ import annotations

import pandas as pd

from .config.checks import show
from .config.schema import DataConfig
from .errors import InputError

LABEL = "Pathologic_typing"
CATEGORY_NAMES = {
    0: "small keratinizing SCC",
    1: "small keratinizing adenocarcinoma",
    2: "small non-keratinizing SCC",
    3: "small non-keratinizing adenocarcinoma",
    4: "large keratinizing SCC",
    5: "large keratinizing adenocarcinoma",
    6: "large non-keratinizing SCC",
    7: "large non-keratinizing adenocarcinoma",
}


def pathology_columns(data: DataConfig) -> dict[str, str]:
    return {"large": data.large_column, "non_keratinizing": data.non_keratinizing_column,
            "adenocarcinoma": data.adenocarcinoma_column}


def pathology_problems(clinical: pd.DataFrame, data: DataConfig) -> list[str]:
    """One line per missing pathology column or per patient with a value other than 0/1."""
    problems = []
    for role, col in pathology_columns(data).items():
        if col not in clinical.columns:
            problems.append(f"Clinical table lacks pathology column '{col}' ({role}); add it (0/1 per patient) "
                            f"or set data.{role}_column.")
            continue
        for pid, v in zip(clinical[data.id_column], clinical[col]):
            if pd.isna(v) or v not in (0, 1, 0.0, 1.0, True, False):
                problems.append(f"Invalid pathology value for case '{pid}': column '{col}' is {show(v)}, expected 0 or 1; "
                                "correct the clinical table.")
    return problems


def pathologic_typing(clinical: pd.DataFrame, data: DataConfig) -> pd.Series:
    """The 0..7 category per patient, indexed by patient id."""
    problems = pathology_problems(clinical, data)
    if problems:
        raise InputError(problems[0])
    cols = pathology_columns(data)
    y = (4 * clinical[cols["large"]].astype(int) + 2 * clinical[cols["non_keratinizing"]].astype(int)
         + clinical[cols["adenocarcinoma"]].astype(int))
    return pd.Series(y.to_numpy(), index=clinical[data.id_column].astype(str), name=LABEL)
