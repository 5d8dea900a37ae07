"""ComBat harmonisation as a pipeline step: scanner (batch) effects learned on training rows only.

ComBat (Johnson, Li & Rabinovic 2007; for imaging features Fortin et al. 2018; Orlhac et al.
2022's guide) models feature ``g`` of patient ``j`` on scanner (batch) ``i`` as

    x_ijg = alpha_g + C_j beta_g + gamma_ig + delta_ig * eps_ijg

(``C_j``: the covariates whose effect is kept, e.g. age - never the label; ``gamma``/``delta``:
the batch's additive and multiplicative effect). :class:`ComBat.fit` follows the published
steps on the training rows it is given:

1. least squares of every feature on ``[one-hot batch, C]``; ``alpha_g`` = the batch coefficients
   averaged with the batch sizes as weights; ``sigma_g^2`` = the mean squared residual (divisor n);
2. standardise: ``z = (x - alpha - C beta) / sigma``;
3. per batch, ``gamma_hat`` = mean of ``z``, ``delta_hat`` = its variance (ddof 1; 0 -> 1);
4. empirical Bayes across features, per batch: parametric (normal prior on gamma with mean
   ``gamma_bar`` and variance ``tau^2``, inverse-gamma prior on delta by the method of moments,
   iterated to convergence, 1e-4) or non-parametric (each feature's posterior as the
   likelihood-weighted mean of the OTHER features' estimates, Johnson 2007 §3.2);
5. adjust: ``x* = (z - gamma*) / sqrt(delta*) * sigma + alpha + C beta``.

:meth:`ComBat.transform` applies the frozen estimates to any rows of a batch it was fitted on,
so cross-validation fits it on a training fold and applies it to that fold's held-out rows
(inside the nested CV, like scaling and SMOTE); nothing of a held-out row reaches the estimates.
The numbers equal neuroCombat 0.2.12's (Fortin's reference implementation) on the training rows:
``tests/classification/test_harmonize.py`` checks them against a stored table produced by it.
Why not neuroCombat / neuroHarmonize themselves: neuroCombat's learn/apply split
(``neuroCombatFromTraining``) drops the covariates and cannot treat an unseen batch;
neuroHarmonize 2.5.2 would downgrade numpy and pandas in this environment.

A row whose batch was not seen in training is refused (:class:`UnseenBatchError`), unless
``transductive=True`` (``cervirad evaluate --harmonize``): the new batch's ``gamma``/``delta``
are then estimated from ITS OWN rows, standardised with the frozen ``alpha``, ``beta`` and
``sigma``, with the same empirical-Bayes step - no label is used, and the estimate is recorded
in ``transductive_``.

The batch travels with the rows: the step expects it as the LAST column of ``X`` (integer
codes, :data:`BATCH_FEATURE`, added by :func:`attach_batch`) and returns the other columns; the
later steps never see it. Columns that are not harmonised (``columns``: the clinical variables)
pass unchanged; a missing value is filled by the training median for the estimation only and
stays missing in the output (the imputer after this step fills it).
"""
from __future__ import annotations

import logging
import math

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

log = logging.getLogger(__name__)

BATCH_FEATURE = "__batch__"  # the batch-code column appended to a table's features (consumed by ComBat)
PRIORS = ("parametric", "nonparametric")
CONV = 1e-4  # the parametric iteration's convergence (relative change), as in ComBat and neuroCombat


class UnseenBatchError(ValueError):
    """A row belongs to a batch the harmoniser was not fitted on."""


class ComBat(TransformerMixin, BaseEstimator):
    """ComBat harmonisation; ``X``'s last column holds the batch code of each row.

    ``columns``: a bool per feature column (the batch column excluded), True = harmonise (None: all);
    ``covariates``: indices of feature columns whose effect is preserved (fitted, never harmonised);
    ``prior``: ``parametric`` or ``nonparametric`` empirical Bayes; ``eb=False``: the per-batch
    estimates as they are; ``mean_only``: location only; ``transductive``: see the module doc.
    """

    def __init__(self, columns=None, covariates=(), prior: str = "parametric", eb: bool = True,
                 mean_only: bool = False, transductive: bool = False):
        self.columns = columns
        self.covariates = covariates
        self.prior = prior
        self.eb = eb
        self.mean_only = mean_only
        self.transductive = transductive

    # ---------------------------------------------------------------- fit
    def fit(self, X, y=None):
        """Learn the estimates from these rows; ``y`` is ignored (the label never enters ComBat)."""
        if self.prior not in PRIORS:
            raise ValueError(f"ComBat prior {self.prior!r}: choose one of {PRIORS}")
        if hasattr(X, "columns"):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        F, batch = _split(X)
        self.n_features_in_ = F.shape[1] + 1
        self.harmonised_ = _mask(self.columns, F.shape[1])
        self.covariate_idx_ = np.asarray(self.covariates, dtype=int).reshape(-1)
        if np.isin(self.covariate_idx_, np.where(self.harmonised_)[0]).any():
            raise ValueError("a ComBat covariate column cannot be harmonised itself")
        self.batches_, counts = np.unique(batch, return_counts=True)
        self.batch_sizes_ = counts
        H = F[:, self.harmonised_]
        self.fill_ = _nanmedian(H)
        C = F[:, self.covariate_idx_]
        self.covariate_fill_ = _nanmedian(C)
        H, C = _filled(H, self.fill_), _filled(C, self.covariate_fill_)
        onehot = (batch[:, None] == self.batches_[None, :]).astype(float)
        design = np.hstack([onehot, C])
        B = np.linalg.lstsq(design, H, rcond=None)[0]
        nb = len(self.batches_)
        self.alpha_ = (counts / counts.sum()) @ B[:nb]
        self.beta_ = B[nb:]
        self.var_pooled_ = ((H - design @ B) ** 2).mean(axis=0)
        self.active_ = self.var_pooled_ > 1e-12 * np.maximum(1.0, self.alpha_ ** 2)  # constant: left as is
        Z = self._standardise(H, C)
        self.gamma_star_ = np.zeros((nb, H.shape[1]))
        self.delta_star_ = np.ones((nb, H.shape[1]))
        act = self.active_
        for i, b in enumerate(self.batches_):
            g, d = self._estimate(Z[batch == b][:, act])
            self.gamma_star_[i, act], self.delta_star_[i, act] = g, d
        self.transductive_ = {}
        return self

    def _standardise(self, H: np.ndarray, C: np.ndarray) -> np.ndarray:
        sd = np.sqrt(np.where(self.active_, self.var_pooled_, 1.0))
        return (H - self.alpha_ - C @ self.beta_) / sd

    def _estimate(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """gamma*, delta* of one batch from its standardised rows (rows x features)."""
        n = Z.shape[0]
        gamma_hat = Z.mean(axis=0)
        if self.mean_only or n < 2:  # one row: no variance to estimate; location only
            delta_hat = np.ones(Z.shape[1])
        else:
            delta_hat = Z.var(axis=0, ddof=1)
            delta_hat[delta_hat == 0] = 1.0
        if not self.eb or Z.shape[1] < 3:  # empirical Bayes needs a spread across features
            return gamma_hat, delta_hat
        if self.prior == "nonparametric":
            return _nonparametric(Z, gamma_hat, delta_hat)
        gamma_bar, t2 = gamma_hat.mean(), gamma_hat.var(ddof=1)
        if self.mean_only or n < 2:
            return _postmean(gamma_hat, gamma_bar, 1.0, 1.0, t2), delta_hat
        a, b = _inverse_gamma_prior(delta_hat)
        return _parametric(Z, gamma_hat, delta_hat, gamma_bar, t2, a, b)

    # ---------------------------------------------------------------- transform
    def transform(self, X):
        """The rows harmonised with the frozen estimates; the batch column removed."""
        F, batch = _split(X)
        out = F.copy()
        H = F[:, self.harmonised_]
        missing = np.isnan(H)
        C = _filled(F[:, self.covariate_idx_], self.covariate_fill_)
        Z = self._standardise(_filled(H, self.fill_), C)
        gamma = np.zeros_like(Z)
        delta = np.ones_like(Z)
        known = {b: i for i, b in enumerate(self.batches_)}
        unseen = sorted(set(np.unique(batch).tolist()) - set(known))
        if unseen and not self.transductive:
            raise UnseenBatchError(f"batch code(s) {unseen} were not seen when ComBat was fitted (seen: "
                                   f"{self.batches_.tolist()}); only cervirad evaluate --harmonize estimates a new "
                                   "batch from its own rows")
        for b in np.unique(batch):
            rows = batch == b
            if b in known:
                gamma[rows], delta[rows] = self.gamma_star_[known[b]], self.delta_star_[known[b]]
                continue
            g, d = np.zeros(Z.shape[1]), np.ones(Z.shape[1])  # transductive: from this batch's own rows
            g[self.active_], d[self.active_] = self._estimate(Z[rows][:, self.active_])
            gamma[rows], delta[rows] = g, d
            self.transductive_[float(b)] = {"n": int(rows.sum()), "gamma": g, "delta": d}
        sd = np.sqrt(np.where(self.active_, self.var_pooled_, 1.0))
        adjusted = (Z - gamma) / np.sqrt(delta) * sd + self.alpha_ + C @ self.beta_
        adjusted = np.where(self.active_, adjusted, H)
        adjusted[missing] = np.nan
        out[:, self.harmonised_] = adjusted
        if hasattr(X, "columns"):
            import pandas as pd

            return pd.DataFrame(out, columns=list(X.columns[:-1]), index=X.index)
        return out

    def get_feature_names_out(self, input_features=None):
        names = getattr(self, "feature_names_in_", None) if input_features is None else input_features
        if names is None:
            names = [f"x{j}" for j in range(self.n_features_in_)]
        return np.asarray(names, dtype=object)[:-1]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # it comes before the imputer
        return tags


# --------------------------------------------------------------------------- the equations
def _postmean(g_hat, g_bar, n, d_star, t2):
    return (t2 * n * g_hat + d_star * g_bar) / (t2 * n + d_star)


def _postvar(sum2, n, a, b):
    return (0.5 * sum2 + b) / (n / 2.0 + a - 1.0)


def _inverse_gamma_prior(delta_hat: np.ndarray) -> tuple[float, float]:
    """Method-of-moments inverse-gamma prior (a, b) of the batch variances across features."""
    m, s2 = delta_hat.mean(), delta_hat.var(ddof=1)
    s2 = s2 if s2 > 0 else 1e-12
    return (2 * s2 + m ** 2) / s2, (m * s2 + m ** 3) / s2


def _parametric(Z, g_hat, d_hat, g_bar, t2, a, b, max_iter: int = 1000):
    n = Z.shape[0]
    g_old, d_old = g_hat.copy(), d_hat.copy()
    for _ in range(max_iter):
        g_new = _postmean(g_hat, g_bar, n, d_old, t2)
        d_new = _postvar(((Z - g_new) ** 2).sum(axis=0), n, a, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            change = max(np.nanmax(np.abs(g_new - g_old) / np.abs(g_old)), np.nanmax(np.abs(d_new - d_old) / d_old))
        g_old, d_old = g_new, d_new
        if not change > CONV:
            break
    return g_new, d_new


def _nonparametric(Z, g_hat, d_hat, chunk: int = 256):
    """Each feature's gamma*, delta*: the other features' estimates weighted by the likelihood of
    this feature's standardised values under them (Johnson 2007 §3.2; computed in log space)."""
    n, p = Z.shape
    gamma, delta = np.empty(p), np.empty(p)
    for start in range(0, p, chunk):
        idx = np.arange(start, min(p, start + chunk))
        # sum over rows of (z_jg - gamma_k)^2 for feature g (rows of idx) and every other feature k
        zz = (Z[:, idx] ** 2).sum(axis=0)[:, None]
        sum2 = zz - 2 * (Z[:, idx].sum(axis=0)[:, None] * g_hat[None, :]) + n * g_hat[None, :] ** 2
        loglh = -0.5 * n * np.log(2 * math.pi * d_hat)[None, :] - sum2 / (2 * d_hat[None, :])
        loglh[np.arange(len(idx)), idx] = -np.inf  # leave the feature itself out
        w = np.exp(loglh - loglh.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        gamma[idx], delta[idx] = w @ g_hat, w @ d_hat
    return gamma, delta


# --------------------------------------------------------------------------- helpers
def _split(X) -> tuple[np.ndarray, np.ndarray]:
    A = np.asarray(X, dtype=float)
    if A.ndim != 2 or A.shape[1] < 2:
        raise ValueError("ComBat expects the feature columns and the batch code as the last column")
    batch = A[:, -1]
    if np.isnan(batch).any():
        raise ValueError("ComBat: a row has no batch code (the last column is empty)")
    return A[:, :-1].copy(), batch


def _mask(columns, n: int) -> np.ndarray:
    if columns is None:
        return np.ones(n, dtype=bool)
    m = np.asarray(columns, dtype=bool)
    if m.shape != (n,):
        raise ValueError(f"ComBat has {m.size} column flag(s) for {n} feature column(s)")
    return m


def _nanmedian(A: np.ndarray) -> np.ndarray:
    if A.shape[1] == 0:
        return np.zeros(0)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(A, axis=0)
    return np.nan_to_num(med, nan=0.0)


def _filled(A: np.ndarray, fill: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(A), fill[None, :], A) if A.size else A


# --------------------------------------------------------------------------- the batch with the rows
def check_settings(cfg) -> None:
    """Before a classify stage runs: ComBat needs each patient's scanner (``data.batch_column``). (Not a
    config-load rule: ``evaluate`` freezes a harmonised model's config with the external cohort's data
    section, where no batch column means "one new scanner".)"""
    from ..config.checks import show
    from ..errors import ConfigError

    if cfg.classification.harmonize != "none" and cfg.data.batch_column is None:
        raise ConfigError(f"Config key 'classification.harmonize' is {show(cfg.classification.harmonize)} but "
                          "data.batch_column is null: ComBat needs each patient's scanner; set data.batch_column (a "
                          "clinical-table or manifest column, or auto) or classification.harmonize: none.")


def make_harmonizer(ccfg, features: list[str]) -> ComBat | None:
    """The unfitted ComBat step for ``classification.harmonize`` over ``features`` (the batch-code
    column last); image features are harmonised, clinical ``clin_*`` columns are not, and
    ``classification.harmonize_covariates`` are kept as covariates. None when harmonize is none."""
    from ..errors import InputError

    if getattr(ccfg, "harmonize", "none") == "none":
        return None
    if not features or features[-1] != BATCH_FEATURE:
        raise InputError("classification.harmonize is 'combat' but the feature table carries no batch; set "
                         "data.batch_column and re-run `cervirad extract-features`.")
    names = features[:-1]
    idx = {f: j for j, f in enumerate(names)}
    missing = [c for c in ccfg.harmonize_covariates if c not in idx]
    if missing:
        raise InputError(f"classification.harmonize_covariates {missing} are not feature columns of the table "
                         f"(e.g. clin_age); name encoded clinical columns, never the label.")
    covariates = [idx[c] for c in ccfg.harmonize_covariates]
    columns = np.array([not f.startswith("clin_") for f in names], dtype=bool)
    columns[covariates] = False
    return ComBat(columns=columns, covariates=tuple(covariates), prior=ccfg.harmonize_prior)


def batch_codes(labels, levels: list[str]) -> np.ndarray:
    """Each label's index in ``levels``; a label not in it gets a new code after them (in order of appearance)."""
    lookup = {str(b): i for i, b in enumerate(levels)}
    out = []
    for v in (str(x) for x in labels):
        if v not in lookup:
            lookup[v] = len(lookup)
        out.append(lookup[v])
    return np.asarray(out, dtype=float)


def attach_batch(table, labels, levels: list[str]):
    """``table`` with the batch code of each row appended as the last feature column (:data:`BATCH_FEATURE`)."""
    from .data import Table

    codes = batch_codes(labels, levels)
    return Table(np.column_stack([table.X, codes]), table.y, table.classes, table.ids,
                 [*table.features, BATCH_FEATURE], table.name, table.notes)
