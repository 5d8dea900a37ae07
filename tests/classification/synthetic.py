"""Seeded synthetic feature tables shaped like ``features/features.parquet`` (tests, benchmark).

Columns: ``patient_id``, ``split``, the label, then numeric features named like the real
ones (``original_glcm_*``, ``wavelet-HHH_firstorder_*``, ``hist_*``, ``clin_*``). The first
``informative`` columns carry a class-dependent mean shift of ``signal`` standard
deviations; the rest are noise (some correlated with the informative ones); a few
clinical columns have missing values and one column is constant, as real tables do.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from cervirad.pathology import LABEL

PREFIXES = ("original_glcm", "original_firstorder", "wavelet-HHH_glrlm", "log-sigma-1-0-mm-3D_gldm", "square_ngtdm")


def synthetic_table(class_sizes: dict, n_features: int = 868, informative: int = 20, signal: float = 1.0,
                    seed: int = 0, label: str = LABEL, split_fractions=(0.7, 0.15, 0.15),
                    nan_fraction: float = 0.05) -> pd.DataFrame:
    """A table of ``sum(class_sizes)`` patients; ``class_sizes`` maps label -> member count."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([[c] * n for c, n in class_sizes.items()])
    rng.shuffle(y)
    n = len(y)
    classes = list(class_sizes)
    centers = rng.normal(0, 1, (len(classes), informative))
    X = rng.normal(0, 1, (n, n_features))
    code = np.array([classes.index(v) for v in y])
    X[:, :informative] += signal * centers[code]
    n_corr = min(informative, max(0, n_features - informative))
    X[:, informative:informative + n_corr] = X[:, :n_corr] + rng.normal(0, 0.5, (n, n_corr))
    X = X * rng.uniform(0.5, 50, n_features) + rng.uniform(-10, 100, n_features)
    names = _names(n_features, rng)
    df = pd.DataFrame(X, columns=names)
    df.iloc[:, -1] = 3.0  # a constant column
    clin = [c for c in names if c.startswith("clin_")]
    for c in clin[:3]:
        df.loc[rng.random(n) < nan_fraction, c] = np.nan
    ids = [f"P{i:03d}" for i in range(n)]
    split = _split(y, split_fractions, rng)
    head = pd.DataFrame({"patient_id": ids, "split": split, label: y})
    return pd.concat([head, df], axis=1)


def _names(n: int, rng) -> list[str]:
    clin = [f"clin_{v}" for v in ("age", "hpv", "figo_stage", "lymph_node", "lvsi", "invasion_depth_cm",
                                  "chemotherapy", "radiotherapy")][: min(8, n)]
    hist = [f"hist_{v}" for v in ("mean", "std", "skewness", "kurtosis", "entropy", "energy", "median", "p10",
                                  "p90")][: max(0, min(9, n - len(clin)))]
    rest = n - len(clin) - len(hist)
    rad = [f"{PREFIXES[i % len(PREFIXES)]}_Feature{i:03d}" for i in range(rest)]
    return clin + hist + rad


def _split(y: np.ndarray, fractions, rng) -> np.ndarray:
    split = np.empty(len(y), dtype=object)
    for c in np.unique(y):
        idx = np.where(y == c)[0]
        rng.shuffle(idx)
        n_test = max(1, int(round(fractions[2] * len(idx)))) if len(idx) >= 3 else 0
        n_val = max(1, int(round(fractions[1] * len(idx)))) if len(idx) >= 3 else 0
        split[idx] = "train"
        split[idx[:n_test]] = "test"
        split[idx[n_test:n_test + n_val]] = "val"
    return split
