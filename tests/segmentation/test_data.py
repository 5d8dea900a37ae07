import numpy as np
import pandas as pd
import pytest

from cervirad.config import AugmentationConfig, SegmentationConfig
from cervirad.errors import InputError
from cervirad.segmentation.data import augment, epoch_slices, random_crop, val_slices


def _mask(n=96):
    m = np.zeros((n, n), np.uint8)
    m[20:45, 30:70] = 1  # asymmetric: flips and rotations change it
    m[45:60, 30:40] = 1
    return m


@pytest.mark.parametrize("seed", range(6))
def test_augmentation_keeps_image_and_mask_aligned(seed):
    """Transform the mask as if it were an image: the result must match the transformed mask."""
    m = _mask()
    image = np.stack([m.astype(np.float32), 1.0 - m.astype(np.float32)])
    cfg = AugmentationConfig(noise_sd=0.0)
    img_out, m_out = augment(image, m, np.random.default_rng(seed), cfg)
    as_image = img_out[0] > 0.5
    agree = (as_image == m_out.astype(bool)).mean()
    inter = (as_image & m_out.astype(bool)).sum() / max(1, (as_image | m_out.astype(bool)).sum())
    assert agree > 0.99 and inter > 0.9
    assert not np.array_equal(m_out, m) or seed == 0  # the transform actually did something


def test_augmentation_noise_only_on_image():
    m = _mask()
    image = np.zeros((1,) + m.shape, np.float32)
    cfg = AugmentationConfig(rotation_deg=0, flip_horizontal=False, flip_vertical=False, scale_min=1, scale_max=1,
                             noise_sd=0.01)
    img_out, m_out = augment(image, m, np.random.default_rng(0), cfg)
    assert np.array_equal(m_out, m)
    assert 0.008 < img_out.std() < 0.012


def _rows(n_lesion, n_free):
    return pd.DataFrame({"patient_id": ["a"] * (n_lesion + n_free), "slice": range(n_lesion + n_free),
                         "has_lesion": [True] * n_lesion + [False] * n_free})


def test_epoch_sampling_share_and_cap():
    rows = _rows(30, 200)
    cfg = SegmentationConfig(lesion_free_fraction=0.25)
    idx = epoch_slices(rows, cfg, np.random.default_rng(0))
    assert len(idx) == 40 and rows.has_lesion.to_numpy()[idx].sum() == 30
    capped = epoch_slices(rows, SegmentationConfig(lesion_free_fraction=0.25, max_train_slices_per_epoch=20),
                          np.random.default_rng(0))
    assert len(capped) == 20 and rows.has_lesion.to_numpy()[capped].sum() == 15
    assert len(set(capped)) == 20
    only = epoch_slices(rows, SegmentationConfig(lesion_free_fraction=0.0), np.random.default_rng(0))
    assert rows.has_lesion.to_numpy()[only].all()


def test_val_subset_is_fixed():
    rows = _rows(30, 200)
    cfg = SegmentationConfig(max_val_slices=24)
    a, b = val_slices(rows, cfg, 3), val_slices(rows, cfg, 3)
    assert np.array_equal(a, b) and len(a) == 24
    assert len(val_slices(rows, SegmentationConfig(), 3)) == 230


def test_no_lesion_slices_in_training_is_an_error():
    with pytest.raises(InputError, match="training split has no slice with a lesion"):
        epoch_slices(_rows(0, 50), SegmentationConfig(), np.random.default_rng(0))


def test_random_crop_contains_lesion():
    m = np.zeros((256, 256), np.uint8)
    m[200:210, 10:20] = 1
    img = np.zeros((1, 256, 256), np.float32)
    for s in range(10):
        ci, cm = random_crop(img, m, 64, np.random.default_rng(s))
        assert ci.shape == (1, 64, 64) and cm.shape == (64, 64) and cm.any()


@pytest.mark.parametrize("override,match", [("segmentation.lesion_free_fraction=1.0", "lesion_free_fraction"),
                                            ("segmentation.train_crop=8", "train_crop"),
                                            ("segmentation.threshold=0", "threshold")])
def test_bad_segmentation_settings_are_refused(override, match):
    from cervirad.config import load_config
    from cervirad.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])
