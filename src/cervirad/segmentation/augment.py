"""nnU-Net's extra training augmentations, as pure array functions on one slice.

Each function takes an image ``(C, H, W)`` float32 (and, for the spatial one, its mask
``(H, W)`` uint8) and a seeded ``numpy.random.Generator`` and returns new arrays; the ranges are
nnU-Net's defaults (Isensee et al., Nature Methods 2021, supplementary note 3; batchgenerators):

============  =====================================================================  ==============
transform     what                                                                   range
============  =====================================================================  ==============
elastic       displacement field = Gaussian-smoothed uniform noise in [-1, 1] times  alpha [0, 200],
              alpha; image bilinear (border = channel minimum), mask nearest, SAME   sigma [9, 13] px
              field (so the mask stays on the image)
blur          Gaussian blur of every channel                                          sigma [0.5, 1] px
brightness    multiply by one factor                                                  [0.75, 1.25]
contrast      (x - mean) · f + mean, clipped to the channel's original range          f [0.75, 1.25]
lowres        downsample by a zoom (nearest), back to the size (cubic)               zoom [0.5, 1]
gamma         rescale to [0, 1], x ** gamma, back; mean and sd kept (retain_stats)   gamma [0.7, 1] or
                                                                                      [1, 1.5] (1/2 each)
============  =====================================================================  ==============

:func:`extra_augment` applies each with its configured probability
(``segmentation.augmentation.<name>_p``), in nnU-Net's order (spatial first, then blur,
brightness, contrast, low resolution, gamma). Only ``elastic`` moves pixels; the others touch the
image alone, so image and mask stay aligned by construction.

Why numpy/OpenCV and not TorchIO or MONAI: neither is in the environment; both would add a
large dependency for six functions of a few lines each, and OpenCV (already used for the affine
transform) does a 128 x 128 slice in well under a millisecond per transform (the loader time
per batch is measured in ``scripts/bench/sts_cv.py --loader``).
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

ELASTIC_ALPHA = (0.0, 200.0)
ELASTIC_SIGMA = (9.0, 13.0)
BLUR_SIGMA = (0.5, 1.0)
BRIGHTNESS = (0.75, 1.25)
CONTRAST = (0.75, 1.25)
LOWRES_ZOOM = (0.5, 1.0)
GAMMA_LOW, GAMMA_HIGH = (0.7, 1.0), (1.0, 1.5)
EXTRA = ("elastic", "blur", "brightness", "contrast", "lowres", "gamma")  # nnU-Net's order


def elastic(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Elastic deformation with one random displacement field for image and mask (see module doc)."""
    h, w = mask.shape
    alpha, sigma = rng.uniform(*ELASTIC_ALPHA), rng.uniform(*ELASTIC_SIGMA)
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma, mode="constant") * alpha
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma, mode="constant") * alpha
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x, map_y = (xx + dx).astype(np.float32), (yy + dy).astype(np.float32)
    out = np.empty_like(image)
    for c in range(image.shape[0]):
        out[c] = cv2.remap(image[c], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=float(image[c].min()))
    m = cv2.remap(mask, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out, m


def blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur of every channel, sigma in ``BLUR_SIGMA`` pixels."""
    s = rng.uniform(*BLUR_SIGMA)
    return np.stack([cv2.GaussianBlur(c, (0, 0), sigmaX=s, sigmaY=s, borderType=cv2.BORDER_REFLECT) for c in image])


def brightness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every channel times one factor in ``BRIGHTNESS``."""
    return (image * np.float32(rng.uniform(*BRIGHTNESS))).astype(image.dtype)


def contrast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast about each channel's mean by a factor in ``CONTRAST``, clipped to the original range."""
    f = np.float32(rng.uniform(*CONTRAST))
    out = np.empty_like(image)
    for c, ch in enumerate(image):
        m = ch.mean()
        out[c] = np.clip((ch - m) * f + m, ch.min(), ch.max())
    return out


def lowres(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Simulated low resolution: down by a zoom in ``LOWRES_ZOOM`` (nearest, pixel centres), back up (cubic)."""
    _, h, w = image.shape
    z = rng.uniform(*LOWRES_ZOOM)
    size = (max(1, int(round(w * z))), max(1, int(round(h * z))))
    return np.stack([cv2.resize(cv2.resize(c, size, interpolation=cv2.INTER_NEAREST_EXACT), (w, h),
                                interpolation=cv2.INTER_CUBIC) for c in image])


def gamma(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma on each channel rescaled to [0, 1]; the channel's mean and sd are restored afterwards."""
    g = rng.uniform(*(GAMMA_LOW if rng.random() < 0.5 else GAMMA_HIGH))
    out = np.empty_like(image)
    for c, ch in enumerate(image):
        lo, hi = float(ch.min()), float(ch.max())
        if hi - lo < 1e-8:
            out[c] = ch
            continue
        mean, sd = ch.mean(), ch.std()
        x = ((ch - lo) / (hi - lo)) ** g * (hi - lo) + lo
        out[c] = (x - x.mean()) / max(float(x.std()), 1e-8) * sd + mean
    return out


def extra_augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                  probs: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Each transform of :data:`EXTRA` with probability ``probs[name]`` (in that order). With every
    probability 0 nothing is drawn from ``rng``, so the paper's recipe draws exactly as before."""
    if not any(probs.get(name, 0.0) > 0 for name in EXTRA):
        return image, mask
    for name in EXTRA:
        p = probs.get(name, 0.0)
        if not (rng.random() < p):
            continue
        if name == "elastic":
            image, mask = elastic(image, mask, rng)
        else:
            image = _INTENSITY[name](image, rng)
    return image.astype(np.float32, copy=False), mask


_INTENSITY = {"blur": blur, "brightness": brightness, "contrast": contrast, "lowres": lowres, "gamma": gamma}

__all__ = ["elastic", "blur", "brightness", "contrast", "lowres", "gamma", "extra_augment", "EXTRA"]
