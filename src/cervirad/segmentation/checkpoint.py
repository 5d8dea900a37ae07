"""The segmentation checkpoint: what it holds, how it is written and how it is read back.

A checkpoint (``model.pt``) is a plain dict loadable with ``torch.load(weights_only=True)``:
``format``, ``arch``, ``in_channels``, ``lstm_hidden``, ``recurrence`` (absent in checkpoints
written before it existed: they are 'rows'), ``deep_supervision``,
``input_sequences``, ``preprocess`` (spacing, normalize, slice_axis, slice_size), ``threshold``,
``component_selection`` (chosen on the validation patients), ``state_dict`` and training
provenance (``epoch``, ``val_dice``, ``config``); ``unet_width`` (U-Net; absent = 1.0) and
``train_patch`` (the training patch side, for ``sliding_window: auto``; absent = read from
``config``). A k-fold ensemble (``segmentation.folds`` >= 2) adds ``folds``: one dict per fold
(``fold``, ``state_dict``, ``val_patients``, ``best_epoch``, ``best_val_dice``); ``state_dict``
is then fold 0's.

:func:`checkpoint_header` (from the config), :func:`save_checkpoint` (atomic) and :func:`read_checkpoint`
(checked, one-line errors for foreign files); :func:`build_network` makes the untrained network a
config describes, from the same spec a checkpoint stores (:func:`network_spec`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..config.schema import Config
from ..errors import InputError
from ..files import atomic_path
from ..networks import NETWORKS
from .model import RECURRENCES, build_from_spec, matched_unet_width

FORMAT = "cervirad-seg-v1"


def checkpoint_header(cfg: Config, arch: str, in_channels: int) -> dict:
    """Everything needed to rebuild the network and preprocess new volumes like the training data."""
    s = cfg.segmentation
    return {"format": FORMAT, **network_spec(cfg, arch, in_channels), "input_sequences": list(s.input_sequences),
            "preprocess": {"spacing": list(cfg.preprocess.spacing), "normalize": cfg.preprocess.normalize,
                           "slice_axis": cfg.preprocess.slice_axis, "slice_size": cfg.preprocess.slice_size},
            "threshold": s.threshold, "component_selection": s.component_selection == "always", "config": cfg.to_dict(),
            "train_patch": s.train_crop or cfg.preprocess.slice_size,  # sliding_window=auto compares slices with it
            "context_slices": int(s.context_slices), "lesions": s.lesions}


def network_spec(cfg: Config, arch: str, in_channels: int) -> dict:
    """What rebuilds network ``arch`` (:func:`.model.build_from_spec`); stored in every checkpoint."""
    s = cfg.segmentation
    return {"arch": arch, "in_channels": int(in_channels), "lstm_hidden": s.lstm_hidden, "recurrence": s.recurrence,
            "deep_supervision": s.deep_supervision,
            "unet_width": unet_width(cfg, in_channels) if arch == "unet" else None,
            "net_options": network_options(cfg, arch, in_channels)}


def network_options(cfg: Config, arch: str, in_channels: int) -> dict:
    """A network's own settings: DeepLabv3's ResNet-18 width (``segmentation.deeplab_base``, null = the
    width matching CRFE's parameter count) and output stride 8 (torchvision's); none for the others."""
    if arch != "deeplabv3":
        return {}
    from .deeplab import matched_deeplab_base
    from .model import CRFE, count_parameters

    s = cfg.segmentation
    base = s.deeplab_base or matched_deeplab_base(
        count_parameters(CRFE(in_channels, s.lstm_hidden, s.deep_supervision, s.recurrence)), in_channels,
        s.deep_supervision)
    return {"base": int(base), "output_stride": 8}


def unet_width(cfg: Config, in_channels: int) -> float:
    """``segmentation.unet_width``, or (null) the width matching CRFE's parameter count."""
    s = cfg.segmentation
    return s.unet_width or matched_unet_width(in_channels, s.lstm_hidden, s.recurrence, s.deep_supervision)


def build_network(cfg: Config, arch: str, in_channels: int) -> torch.nn.Module:
    """A fresh, untrained network ``arch`` as the config describes it."""
    return build_from_spec(arch, network_spec(cfg, arch, in_channels))


def read_checkpoint_any(path: Path) -> dict:
    """A checkpoint dict this code wrote (weights only), without the model.pt header checks."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def save_checkpoint(obj: dict, path: Path) -> None:
    """Write the checkpoint dict ``obj`` to ``path`` atomically (``torch.save``)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def read_checkpoint(path: str | Path) -> dict:
    """Load and check a checkpoint dict (weights_only); one-line errors for foreign files."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"Model checkpoint '{p}' not found; pass the model.pt written by `cervirad train-seg`.")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for foreign files
        raise InputError(f"Model checkpoint '{p}' could not be loaded ({type(e).__name__}); pass a model.pt written "
                         "by `cervirad train-seg`.") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT or "state_dict" not in ck:
        raise InputError(f"File '{p}' is not a cervirad segmentation checkpoint (no '{FORMAT}' header); pass a "
                         "model.pt written by `cervirad train-seg`.")
    if ck.get("arch") not in NETWORKS:
        raise InputError(f"Checkpoint '{p}' names architecture {ck.get('arch')!r}; expected one of {tuple(NETWORKS)}.")
    if ck.get("recurrence", "rows") not in RECURRENCES:
        raise InputError(f"Checkpoint '{p}' names recurrence {ck.get('recurrence')!r}; expected one of {RECURRENCES} "
                         "(it was written by a newer cervirad: upgrade, or retrain with this one).")
    return ck
