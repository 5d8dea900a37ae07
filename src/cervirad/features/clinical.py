"""The paper's 8 clinical variables, encoded as numbers for learning (SPEC §1).

Encoding (column ``clin_<variable>``; a missing cell stays NaN and is imputed inside the training
folds by the classifier's ``SimpleImputer``; with ``features.clinical_missing_indicators: true``
every variable also gets ``clin_<variable>_missing``, 1 where the cell was missing, else 0):

==========================  ===============================================================
variable                    kind (parser): value
==========================  ===============================================================
age                         number (:func:`parse_age`): years
hpv_status                  HPV (:func:`parse_hpv`): 1 = positive, 0 = negative
figo_stage                  FIGO (:func:`parse_figo`): ordinal rank on the FIGO 2018 scale
lymph_node_metastasis       binary (:func:`parse_binary`): 1 = yes, 0 = no
lymphovascular_invasion     binary: 1 = yes, 0 = no
invasion_depth_cm           number with unit (:func:`parse_depth_cm`): centimetres
chemotherapy                binary  (treatment: baseline data, not a predictor unless
radiotherapy                binary   ``features.include_treatment`` is true)
==========================  ===============================================================

Accepted values (case, surrounding and inner whitespace, and Unicode width are ignored):

* **Missing markers** (every kind): empty, ``Not reported``, ``Unknown``, ``NA``, ``N/A``,
  ``n.a.``, ``not available``, ``nan``, ``none``, ``null``, ``missing``, ``not done``,
  ``not tested``, ``unk``, ``—`` (em dash). A lone ``-`` or ``–`` (hyphen, en dash) is a missing
  marker in the number and FIGO columns but means *negative* in the binary and HPV columns.
* **Binary** (:data:`BINARY_TRUE` / :data:`BINARY_FALSE`): ``1``/``0`` (also ``1.0``/``0.0``),
  ``true``/``false``, ``yes``/``no``, ``y``/``n``, ``positive``/``negative``, ``pos``/``neg``,
  ``+``/``-`` (the minus may be a hyphen ``-``, the minus sign ``−`` or an en dash ``–``).
* **HPV**: the binary spellings, optionally prefixed by ``HPV`` (``HPV+``, ``HPV-``,
  ``HPV positive``), and ``detected``/``not detected``.
* **Number** (age): a non-negative number, optionally followed by ``y``/``yr``/``yrs``/``year(s)``
  (``51``, ``"51 y"``); a decimal comma is read as a decimal point.
* **Number with unit** (invasion depth): a non-negative number in cm, optionally followed by
  ``cm``; or followed by ``mm`` (converted: ``"15 mm"`` -> 1.5); decimal comma accepted.
* **FIGO stage**: roman stage, letter and digit of FIGO 2018 or 2009, optionally prefixed by
  ``Stage`` or ``FIGO`` (``IIB``, ``IIb``, ``Stage IIB``, ``FIGO IB1``). Ranks (FIGO 2018):

  ====  ====  ====  ====  ====  =====  =====  ===  ====  ====  =====  =====  ===  ===
  IA1   IA2   IB1   IB2   IB3   IIA1   IIA2   IIB  IIIA  IIIB  IIIC1  IIIC2  IVA  IVB
  1     2     3     4     5     6      7      8    9     10    11     12     13   14
  ====  ====  ====  ====  ====  =====  =====  ===  ====  ====  =====  =====  ===  ===

  - **Sub-stage missing** (``IB``, ``III``, ``IIIC``): the mean rank of its sub-stages
    (``IB`` -> 4, ``III`` -> 10.5, ``IIIC`` -> 11.5, ``I`` -> 3).
  - **IIIC evidence suffix**: ``r`` (radiology), ``p`` (pathology) or ``r/p`` after a IIIC stage
    is dropped (``IIIC1r``, ``IIIC1p``, ``IIIC1r/p`` -> IIIC1 = 11).
  - **Grouped / uncertain** (``III/IV``, ``IB2/IB3``, ``III-IV``, ``III or IV``, ``III, IV``): the rank of the
    LOWEST stage of the group, each member ranked as above (``III/IV`` -> rank of ``III`` = 10.5;
    ``IB2/IB3`` -> 4). This is FIGO's own rule: "if there is doubt, the lower stage is assigned".
  - **FIGO 2009**: every 2009 stage name is also a 2018 name, and an untagged value is read as
    FIGO 2018. They differ only for IB: 2009 ``IB1`` (<= 4 cm) = 2018 IB1 + IB2 and 2009 ``IB2``
    (> 4 cm) = 2018 IB3. Tag a 2009 value with its year (``"IB2 (2009)"``, ``"FIGO 2009 IB1"``):
    2009 ``IB1`` -> 3.5, ``IB2`` -> 5, any other 2009 stage -> the rank of its 2018 namesake (2009
    has no nodal stage: a node-positive 2009 IIIB stays IIIB = 10); ``IB3`` and ``IIIC*`` do not
    exist in 2009 and are refused when tagged 2009. Unsubstaged 2009 values take the mean of the
    2009 sub-stage ranks (``IB (2009)`` -> 4.25).

Any other value is a one-line :class:`InputError` naming the case, the column, the value and the
accepted list; :func:`clinical_problems` lists every such problem without raising (``validate``).
This module imports only numpy, pandas and the config, so :mod:`cervirad.validate` may use it.
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from ..config.schema import ClinicalColumnsConfig
from ..errors import InputError

VARIABLES = ("age", "hpv_status", "figo_stage", "lymph_node_metastasis", "lymphovascular_invasion",
             "invasion_depth_cm", "chemotherapy", "radiotherapy")
TREATMENT = ("chemotherapy", "radiotherapy")
FIGO_2018 = ("IA1", "IA2", "IB1", "IB2", "IB3", "IIA1", "IIA2", "IIB", "IIIA", "IIIB", "IIIC1", "IIIC2",
             "IVA", "IVB")
FIGO_RANK = {s: float(i + 1) for i, s in enumerate(FIGO_2018)}
# FIGO 2009 on the 2018 scale: 2009 IB1 (<= 4 cm) covers 2018 IB1 and IB2; 2009 IB2 (> 4 cm) is 2018 IB3
FIGO_2009_RANK = {"IA1": 1.0, "IA2": 2.0, "IB1": 3.5, "IB2": 5.0, "IIA1": 6.0, "IIA2": 7.0, "IIB": 8.0,
                  "IIIA": 9.0, "IIIB": 10.0, "IVA": 13.0, "IVB": 14.0}
FIGO_EDITIONS = {"2018": FIGO_RANK, "2009": FIGO_2009_RANK}

MISSING_MARKERS = frozenset({"", "not reported", "unknown", "na", "n/a", "n.a.", "n.a", "not available",
                             "nan", "none", "null", "missing", "not done", "not tested", "unk", "—"})
DASHES = frozenset({"-", "–"})  # missing in number/FIGO columns, "negative" in binary/HPV columns
BINARY_TRUE = frozenset({"1", "1.0", "true", "yes", "y", "positive", "pos", "+"})
BINARY_FALSE = frozenset({"0", "0.0", "false", "no", "n", "negative", "neg", "-", "−", "–"})
HPV_TRUE = BINARY_TRUE | {"detected"}
HPV_FALSE = BINARY_FALSE | {"not detected", "undetected"}

_MISSING_TEXT = "'Not reported', 'Unknown', 'NA', 'N/A', 'not available', empty"
ACCEPTED = {
    "binary": f"yes/no, y/n, 1/0, true/false, positive/negative, pos/neg, +/- (hyphen, '−' or '–'), "
              f"or a missing marker ({_MISSING_TEXT})",
    "hpv": f"yes/no, 1/0, true/false, positive/negative, pos/neg, +/- (hyphen, '−' or '–'), optionally "
           f"prefixed by 'HPV' ('HPV+'), detected/not detected, or a missing marker ({_MISSING_TEXT})",
    "figo": "IA1 … IVB (2009/2018; sub-stage optional, e.g. 'IB', 'Stage IIb', 'IIIC1r/p'; tag 2009 values "
            f"like 'IB2 (2009)'), grouped like 'III/IV', or a missing marker ({_MISSING_TEXT}, '-')",
    "age": f"a non-negative number of years (e.g. 51, '51 y'), or a missing marker ({_MISSING_TEXT}, '-')",
    "depth": "a non-negative depth in cm ('1.5', '1.5 cm') or mm ('15 mm'), or a missing marker "
             f"({_MISSING_TEXT}, '-')",
}


# --------------------------------------------------------------------------- helpers
def _norm(v) -> str:
    """Lower-case text with Unicode width folded and whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", str(v)).split()).lower()


def _is_nan(v) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    return isinstance(v, (float, np.floating)) and math.isnan(v)


def is_missing(v, dash_is_missing: bool = True) -> bool:
    """True for a missing cell (NaN/None or a missing marker, module docstring)."""
    if _is_nan(v):
        return True
    if not isinstance(v, str):
        return False
    s = _norm(v)
    return s in MISSING_MARKERS or (dash_is_missing and s in DASHES)


def _yes_no(v, true: frozenset, false: frozenset, what: str) -> float:
    if isinstance(v, (bool, np.bool_)):
        return float(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        if v in (0, 1):
            return float(v)
        raise ValueError(f"is not {what}")
    s = _norm(v)
    if s in true:
        return 1.0
    if s in false:
        return 0.0
    raise ValueError(f"is not {what}")


# --------------------------------------------------------------------------- parsers (one per kind)
def parse_binary(v) -> float:
    """1.0 / 0.0 for a yes/no cell, NaN for a missing one; ValueError otherwise (module docstring)."""
    if is_missing(v, dash_is_missing=False):
        return math.nan
    return _yes_no(v, BINARY_TRUE, BINARY_FALSE, "a yes/no value")


def parse_hpv(v) -> float:
    """1.0 = HPV positive, 0.0 = negative, NaN = missing; ValueError otherwise (module docstring)."""
    if is_missing(v, dash_is_missing=False):
        return math.nan
    if isinstance(v, str):
        s = _norm(v)
        if s.startswith("hpv"):
            rest = s[3:].lstrip(" :")
            if is_missing(rest, dash_is_missing=False) and rest:
                return math.nan
            v = rest
    return _yes_no(v, HPV_TRUE, HPV_FALSE, "an HPV status")


_NUMBER = re.compile(r"([+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+))\s*([a-z]*)")


def _number(v, units: dict[str, float], what: str) -> float:
    if isinstance(v, (bool, np.bool_)):
        raise ValueError(f"is not {what}")
    if isinstance(v, (int, float, np.integer, np.floating)):
        x = float(v)
    else:
        m = _NUMBER.fullmatch(_norm(v))
        if not m or m.group(2) not in units:
            raise ValueError(f"is not {what}")
        x = float(m.group(1).replace(",", ".")) * units[m.group(2)]
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"is not {what} (must be finite and >= 0)")
    return x


_AGE_UNITS = {"": 1.0, "y": 1.0, "yr": 1.0, "yrs": 1.0, "year": 1.0, "years": 1.0}
_DEPTH_UNITS = {"": 1.0, "cm": 1.0, "mm": 0.1}


def parse_age(v) -> float:
    """Years (``51``, ``"51 y"``), NaN for a missing cell; ValueError otherwise."""
    if is_missing(v):
        return math.nan
    return _number(v, _AGE_UNITS, "a number of years")


def parse_depth_cm(v) -> float:
    """Centimetres from ``1.5``, ``"1.5 cm"`` or ``"15 mm"``, NaN for a missing cell; ValueError otherwise."""
    if is_missing(v):
        return math.nan
    x = _number(v, _DEPTH_UNITS, "a depth in cm or mm")
    return round(x, 10)  # 15 mm * 0.1 -> 1.5 exactly


_EDITION = re.compile(r"(?<!\d)(2009|2018)(?!\d)")
_NOISE = re.compile(r"FIGO|STAGE|[\s():.]")
_TOKEN = re.compile(r"(IV|III|II|I)([ABC]?)([123]?)(R/P|P/R|R|P)?")
_SEPARATORS = ("/", "-", "–", ",", "OR")


def _stage_rank(name: str, suffix: str | None, edition: str) -> float:
    ranks = FIGO_EDITIONS[edition]
    if suffix and not name.startswith("IIIC"):
        raise ValueError("is not a FIGO stage (r/p applies to IIIC only)")
    if name in ranks:
        return ranks[name]
    # a stage without sub-stage covers the sub-stages it prefixes at a boundary:
    # "I" covers IA1..IB3 but not IIA1 or IVA, "IIIC" covers IIIC1 and IIIC2
    subs = [r for k, r in ranks.items() if k.startswith(name) and len(k) > len(name) and k[len(name)] not in "IV"]
    if not subs:
        if edition == "2009" and (name in FIGO_RANK or name.startswith("IIIC")):
            raise ValueError(f"is not a FIGO 2009 stage ({name} exists in FIGO 2018 only)")
        raise ValueError("is not a FIGO stage")
    return float(np.mean(subs))


def parse_figo(v) -> float:
    """Rank on the FIGO 2018 scale (module docstring), NaN for a missing cell; ValueError otherwise."""
    if is_missing(v):
        return math.nan
    if not isinstance(v, str):
        raise ValueError("is not a FIGO stage")
    s = unicodedata.normalize("NFKC", v).upper()
    editions = set(_EDITION.findall(s))
    if len(editions) > 1:
        raise ValueError("is not a FIGO stage (two editions given)")
    edition = editions.pop() if editions else "2018"
    s = _NOISE.sub("", _EDITION.sub("", s))
    ranks, pos = [], 0
    while True:
        m = _TOKEN.match(s, pos)
        if not m or not m.group(0):
            raise ValueError("is not a FIGO stage")
        ranks.append(_stage_rank(m.group(1) + m.group(2) + m.group(3), m.group(4), edition))
        pos = m.end()
        if pos == len(s):
            break
        sep = next((x for x in _SEPARATORS if s.startswith(x, pos)), None)
        if sep is None:
            raise ValueError("is not a FIGO stage")
        pos += len(sep)
    return min(ranks)  # grouped / uncertain: the lowest stage (FIGO: "in doubt, the lower stage")


@dataclass(frozen=True)
class Kind:
    """A variable kind: its parser (cell -> float, NaN = missing; ValueError = refused) and accepted list."""

    name: str
    parse: Callable[[object], float]
    accepted: str


KINDS = {"binary": Kind("binary", parse_binary, ACCEPTED["binary"]),
         "hpv": Kind("hpv", parse_hpv, ACCEPTED["hpv"]),
         "figo": Kind("figo", parse_figo, ACCEPTED["figo"]),
         "age": Kind("age", parse_age, ACCEPTED["age"]),
         "depth": Kind("depth", parse_depth_cm, ACCEPTED["depth"])}
VARIABLE_KIND = {"age": KINDS["age"], "hpv_status": KINDS["hpv"], "figo_stage": KINDS["figo"],
                 "lymph_node_metastasis": KINDS["binary"], "lymphovascular_invasion": KINDS["binary"],
                 "invasion_depth_cm": KINDS["depth"], "chemotherapy": KINDS["binary"],
                 "radiotherapy": KINDS["binary"]}

# former names, kept for callers
binary = parse_binary
figo_rank = parse_figo


# --------------------------------------------------------------------------- the table
def _show(v) -> str:
    return repr(v.item() if isinstance(v, np.generic) else v)


def _problem(pid, col: str, var: str, v, reason: str, kind: Kind) -> str:
    named = f"column '{col}'" + (f" ({var})" if col != var else "")
    return f"Clinical value for case '{pid}', {named}: {_show(v)} {reason}; accepted: {kind.accepted}."


def _encode_column(ids, values, col: str, var: str) -> tuple[list[float], list[str]]:
    kind = VARIABLE_KIND[var]
    out, problems = [], []
    for pid, v in zip(ids, values):
        try:
            out.append(kind.parse(v))
        except (ValueError, TypeError) as e:
            out.append(math.nan)
            problems.append(_problem(pid, col, var, v, str(e) if isinstance(e, ValueError) else
                                     f"is not {kind.name}", kind))
    return out, problems


def clinical_problems(clinical: pd.DataFrame, columns: ClinicalColumnsConfig, id_column: str) -> list[str]:
    """Every unreadable clinical cell, one line each (case, column, value, accepted list); never raises.

    A column the features need but the table lacks is a problem too, so that ``validate`` fails
    before any stage runs rather than the features stage after hours of training.
    """
    ids = clinical[id_column].astype(str) if id_column in clinical.columns else clinical.index.astype(str)
    problems: list[str] = []
    for var in VARIABLES:
        col = getattr(columns, var)
        if col in clinical.columns:
            problems += _encode_column(ids, clinical[col], col, var)[1]
        else:
            problems.append(f"Clinical table lacks column '{col}' ({var}); add it (a missing value may be written "
                            f"'Not reported') or set features.clinical_columns.{var} to the column that holds it.")
    return problems


def encode_clinical(clinical: pd.DataFrame, columns: ClinicalColumnsConfig, id_column: str,
                    missing_indicators: bool = False) -> pd.DataFrame:
    """``clin_*`` columns (index: patient id) for every row of ``clinical``; missing cells are NaN.

    ``missing_indicators``: also ``clin_<variable>_missing`` (1 = missing, 0 = given), after the
    eight value columns. A missing column or an unreadable cell is a one-line :class:`InputError`
    naming the column, the case and the fix.
    """
    out = pd.DataFrame(index=pd.Index(clinical[id_column].astype(str), name=id_column))
    problems: list[str] = []
    for var in VARIABLES:
        col = getattr(columns, var)
        if col not in clinical.columns:
            raise InputError(f"Clinical table lacks column '{col}' ({var}); add it or set "
                             f"features.clinical_columns.{var} to the column that holds it "
                             f"(columns: {', '.join(map(str, clinical.columns))}).")
        values, probs = _encode_column(out.index, clinical[col], col, var)
        problems += probs
        out[f"clin_{var}"] = np.asarray(values, dtype=float)
    if problems:
        more = (f" (+{len(problems) - 1} more; `cervirad validate` lists them all)" if len(problems) > 1 else "")
        raise InputError(problems[0] + more)
    if missing_indicators:
        for var in VARIABLES:
            out[f"clin_{var}_missing"] = out[f"clin_{var}"].isna().astype(float)
    return out


def excluded_columns(include_treatment: bool, missing_indicators: bool = False) -> list[str]:
    """Clinical columns kept in the table but not used as predictors (treatment, and its indicators)."""
    if include_treatment:
        return []
    return [f"clin_{v}" for v in TREATMENT] + ([f"clin_{v}_missing" for v in TREATMENT] if missing_indicators else [])
