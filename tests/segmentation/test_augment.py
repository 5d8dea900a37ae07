"""nnU-Net's extra augmentations keep image and mask aligned; foreground oversampling forces lesion."""
import numpy as np
import pandas as pd
import pytest

from cervirad.config import AugmentationConfig, SegmentationConfig
from cervirad.segmentation import augment as A
from cervirad.segmentation.data import SliceSet, augment, oversampled_epoch, training_batches


def _mask(n=96):
    m = np.zeros((n, n), np.uint8)
    m[20:45, 30:70] = 1
    m[45:60, 30:40] = 1
    return m


def _centroid(a: np.ndarray) -> np.ndarray:
    """Centroid of the bright half (above the mid-level between the 1st and 99th percentiles)."""
    lo, hi = np.percentile(a, [1, 99])
    ys, xs = np.nonzero(a > (lo + hi) / 2)
    return np.array([ys.mean(), xs.mean()])


@pytest.mark.parametrize("seed", range(4))
def test_elastic_moves_image_and_mask_together(seed):
    m = _mask()
    image = np.stack([m.astype(np.float32), 1.0 - m.astype(np.float32)])
    img, mo = A.elastic(image, m, np.random.default_rng(seed))
    as_image = img[0] > 0.5
    inter = (as_image & mo.astype(bool)).sum() / max(1, (as_image | mo.astype(bool)).sum())
    assert (as_image == mo.astype(bool)).mean() > 0.99 and inter > 0.93
    assert not np.array_equal(mo, m)  # it deformed


@pytest.mark.parametrize("name", ["blur", "brightness", "contrast", "lowres", "gamma"])
def test_intensity_transforms_leave_geometry_alone(name):
    """A mask-shaped image keeps its place (centroid within a pixel: resampling to a non-integer low
    resolution shifts by a fraction of a pixel) and its shape."""
    m = _mask()
    image = np.stack([m.astype(np.float32) * 2.0 + 0.5])
    out = getattr(A, name)(image, np.random.default_rng(3))
    assert out.shape == image.shape and np.isfinite(out).all()
    assert np.abs(_centroid(out[0]) - _centroid(image[0])).max() < 1.0
    if name in ("brightness", "contrast", "gamma"):  # monotonic: the bright region is exactly the mask
        assert np.array_equal(out[0] > (out[0].min() + out[0].max()) / 2, m.astype(bool))


def test_gamma_keeps_mean_and_sd():
    rng = np.random.default_rng(0)
    image = rng.standard_normal((2, 64, 64)).astype(np.float32)
    out = A.gamma(image, np.random.default_rng(1))
    assert np.allclose(out.mean(axis=(1, 2)), image.mean(axis=(1, 2)), atol=1e-4)
    assert np.allclose(out.std(axis=(1, 2)), image.std(axis=(1, 2)), atol=1e-4)
    assert not np.allclose(out, image)


@pytest.mark.parametrize("seed", range(3))
def test_full_augmentation_with_every_extra_keeps_alignment(seed):
    m = _mask()
    image = np.stack([m.astype(np.float32)])
    cfg = AugmentationConfig(noise_sd=0.0, elastic_p=1.0)  # intensity transforms would move the 0.5 level
    img, mo = augment(image, m, np.random.default_rng(seed), cfg)
    as_image = img[0] > 0.5
    assert (as_image & mo.astype(bool)).sum() / max(1, (as_image | mo.astype(bool)).sum()) > 0.9
    every = AugmentationConfig(**{f"{k}_p": 1.0 for k in A.EXTRA})
    img2, mo2 = augment(image, m, np.random.default_rng(seed), every)
    assert img2.dtype == np.float32 and mo2.dtype == np.uint8 and mo2.any()


def test_paper_recipe_draws_nothing_extra():
    """All probabilities 0 (the paper's): no random number is drawn, so seeded runs are unchanged."""
    rng = np.random.default_rng(5)
    before = rng.bit_generator.state
    img, m = A.extra_augment(np.zeros((1, 8, 8), np.float32), np.zeros((8, 8), np.uint8), rng, {})
    assert rng.bit_generator.state == before


def _slice_set(n_lesion=10, n_free=30, size=96):
    rng = np.random.default_rng(0)
    n = n_lesion + n_free
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n_lesion):  # a small lesion near a corner: a random crop rarely hits it
        y, x = rng.integers(2, 12, size=2)
        masks[i, y:y + 4, x:x + 4] = 1
    images = rng.standard_normal((n, 1, size, size)).astype(np.float16)
    rows = pd.DataFrame({"patient_id": ["a"] * n, "slice": range(n), "has_lesion": masks.any(axis=(1, 2)),
                         "lesion_pixels": masks.sum(axis=(1, 2))})
    return SliceSet(None, rows, {"a": images}, {"a": masks})


def test_foreground_oversampling_rate_and_forced_crops_hold_lesion():
    data = _slice_set()
    cfg = SegmentationConfig(batch_size=8, foreground_oversampling=0.33, max_train_slices_per_epoch=64,
                             augmentation=AugmentationConfig(noise_sd=0.0))
    order, forced = oversampled_epoch(data.rows, cfg, np.random.default_rng(0))
    assert len(order) == 64 and forced.sum() == 24  # 3 of every 8 (nnU-Net: round(8 * 0.67) = 5 random)
    assert forced.reshape(8, 8)[:, 5:].all() and not forced.reshape(8, 8)[:, :5].any()
    assert data.rows.has_lesion.to_numpy()[order[forced]].all()
    assert (~data.rows.has_lesion.to_numpy()[order[~forced]]).any()  # the rest: any slice
    got = np.concatenate([m for _, m in training_batches(data, order, cfg, np.random.default_rng(1), 32, forced)])
    has = got.reshape(len(got), -1).max(axis=1) > 0
    assert has[forced].all()  # every forced 32 px crop (after rotation/scale/flips) holds lesion
    assert has.mean() < 0.6  # the random ones mostly miss the small corner lesion


def test_foreground_oversampling_needs_lesion():
    from cervirad.errors import InputError

    data = _slice_set(n_lesion=0)
    with pytest.raises(InputError, match="no slice with a lesion"):
        oversampled_epoch(data.rows, SegmentationConfig(foreground_oversampling=0.33), np.random.default_rng(0))
