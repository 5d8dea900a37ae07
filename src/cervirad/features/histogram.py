"""The paper's 9 gray-level-histogram features of the lesion, computed with OpenCV (``cv2.calcHist``).

Gray levels. MRI has no absolute unit, so the volume is first mapped to 8-bit gray levels as a
radiologist's display would: ``g = round(255 * (x - lo) / (hi - lo))`` clipped to 0..255, where
``lo``/``hi`` are the 0.5th/99.5th percentiles of the WHOLE volume (robust to a few hot voxels;
the lesion's brightness relative to the rest of the image is kept, unlike a lesion-only window).

Histogram. ``h = cv2.calcHist([g], [0], lesion_mask, [B], [0, 256])`` with ``B`` =
``features.histogram_bins`` (256: one bin per gray level). Bin ``k`` (0..B-1) has the value
``v_k = k * 256 / B`` (its lower edge; ``v_k = k`` for B = 256) and probability
``p_k = h_k / N`` with ``N`` the number of lesion voxels. The 9 features:

===================  ==========================================================================
``hist_mean``        mu = sum_k v_k p_k
``hist_std``         sigma = sqrt(sum_k (v_k - mu)^2 p_k)
``hist_skewness``    sum_k (v_k - mu)^3 p_k / sigma^3   (0 when sigma = 0)
``hist_kurtosis``    sum_k (v_k - mu)^4 p_k / sigma^4 - 3   (excess kurtosis; 0 when sigma = 0)
``hist_energy``      sum_k p_k^2   (uniformity)
``hist_entropy``     -sum_{p_k > 0} p_k log2 p_k   (bits)
``hist_median``      v_k of the first bin where the cumulative sum of p reaches 0.5
``hist_mode``        v_k of the most populated bin (the lowest such bin on ties)
``hist_iqr``         v(Q3) - v(Q1): first bins where the cumulative sum reaches 0.75 and 0.25
===================  ==========================================================================
"""
from __future__ import annotations

import numpy as np

WINDOW_PERCENTILES = (0.5, 99.5)


def to_gray_levels(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``round(255 * (arr - lo) / (hi - lo))`` clipped to 0..255 as uint8 (all 0 when hi <= lo)."""
    if not hi > lo:
        return np.zeros(arr.shape, np.uint8)
    g = np.rint(255.0 * (arr.astype(np.float64) - lo) / (hi - lo))
    return np.clip(g, 0, 255).astype(np.uint8)


def volume_window(arr: np.ndarray) -> tuple[float, float]:
    """The (0.5th, 99.5th) percentiles of the whole volume."""
    lo, hi = np.percentile(arr, WINDOW_PERCENTILES)
    return float(lo), float(hi)


def gray_histogram(gray: np.ndarray, mask: np.ndarray, bins: int = 256) -> np.ndarray:
    """Voxel counts per bin of ``gray`` (uint8) inside ``mask`` with ``cv2.calcHist``.

    calcHist takes 2D images, so a volume is laid out as one (z*y, x) image; the counts are
    the same because a histogram ignores where the voxels are.
    """
    import cv2

    g2 = np.ascontiguousarray(gray.reshape(-1, gray.shape[-1]), dtype=np.uint8)
    m2 = np.ascontiguousarray(mask.reshape(-1, mask.shape[-1]), dtype=np.uint8)
    return cv2.calcHist([g2], [0], m2, [int(bins)], [0, 256]).ravel().astype(np.float64)


def histogram_features(counts: np.ndarray) -> dict[str, float]:
    """The 9 features (module docstring) of a histogram ``counts`` over 0..255 in ``len(counts)`` bins."""
    counts = np.asarray(counts, np.float64)
    n = counts.sum()
    if n <= 0:
        raise ValueError("empty histogram (no voxel inside the mask)")
    p = counts / n
    v = np.arange(len(p)) * (256.0 / len(p))
    mu = float((v * p).sum())
    var = float(((v - mu) ** 2 * p).sum())
    sd = np.sqrt(var)
    skew = float(((v - mu) ** 3 * p).sum() / sd ** 3) if sd > 0 else 0.0
    kurt = float(((v - mu) ** 4 * p).sum() / sd ** 4 - 3.0) if sd > 0 else 0.0
    nz = p[p > 0]
    cdf = np.cumsum(p)

    def quantile(q: float) -> float:
        return float(v[int(np.searchsorted(cdf, q - 1e-12))])

    return {
        "mean": mu, "std": float(sd), "skewness": skew, "kurtosis": kurt,
        "energy": float((p ** 2).sum()), "entropy": float(-(nz * np.log2(nz)).sum()),
        "median": quantile(0.5), "mode": float(v[int(np.argmax(counts))]),
        "iqr": quantile(0.75) - quantile(0.25),
    }


def lesion_histogram_features(arr: np.ndarray, mask: np.ndarray, bins: int = 256) -> dict[str, float]:
    """``hist_*`` features of the voxels of ``arr`` where ``mask`` is true (window: the whole ``arr``)."""
    lo, hi = volume_window(arr)
    counts = gray_histogram(to_gray_levels(arr, lo, hi), mask.astype(bool), bins)
    return {f"hist_{k}": v for k, v in histogram_features(counts).items()}
