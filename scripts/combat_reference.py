"""Write tests/fixtures/combat_reference.csv: neuroCombat 0.2.12's output on a small seeded table.

The reference numbers for ``tests/classification/test_harmonize.py`` (cervirad's own ComBat must
reproduce them). neuroCombat is not a cervirad dependency (neuroHarmonize, its usual companion,
would downgrade numpy and pandas here); produce the file once with its source on the path:

    pip download --no-deps neuroCombat==0.2.12 -d /tmp/ncb && tar xzf /tmp/ncb/neuroCombat-0.2.12.tar.gz -C /tmp/ncb
    PYTHONPATH=/tmp/ncb/neuroCombat-0.2.12 python scripts/combat_reference.py

Table: 36 patients on 3 scanners (14, 12, 10), 6 features with batch-specific shifts and scales,
one continuous covariate (age) whose effect is kept. Columns: batch, age, f0..f5 (input), then
the harmonised values for parametric (p_f*) and non-parametric (np_f*) empirical Bayes.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
from neuroCombat import neuroCombat

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "combat_reference.csv"


def table(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    batch = np.repeat([0, 1, 2], [14, 12, 10])
    age = rng.normal(55, 10, batch.size).round(1)
    shift = rng.normal(0, 1.5, (3, 6))
    scale = rng.uniform(0.6, 1.8, (3, 6))
    base = rng.normal(10, 2, 6)
    X = base + 0.05 * (age[:, None] - 55) + shift[batch] + scale[batch] * rng.normal(0, 1, (batch.size, 6))
    df = pd.DataFrame(X.round(4), columns=[f"f{j}" for j in range(6)])
    df.insert(0, "age", age)
    df.insert(0, "batch", batch)
    return df


def main() -> None:
    df = table()
    feats = [c for c in df.columns if c.startswith("f")]
    covars = df[["batch", "age"]]
    for name, parametric in (("p", True), ("np", False)):
        with contextlib.redirect_stdout(io.StringIO()):
            res = neuroCombat(df[feats].to_numpy(dtype=float).T, covars, "batch", continuous_cols=["age"],
                              parametric=parametric)
        for j, f in enumerate(feats):
            df[f"{name}_{f}"] = res["data"][j]
    df.to_csv(OUT, index=False, float_format="%.10g")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
