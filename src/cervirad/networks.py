"""The segmentation networks cervirad trains: one :class:`Network` entry per network, in :data:`NETWORKS`.

An entry is the network's report label and its builder, ``"module:function"`` taking the network
part of a checkpoint header (:func:`cervirad.segmentation.model.build_from_spec`), imported only
when a network is built: the config reads this table (the values of ``segmentation.model`` and
``segmentation.compare``) without importing torch. Training, ``model: auto``, inference, the
``--model`` option and the report take their list of networks from here. A next network is its
module (with a builder) and one entry here (and its options in ``segmentation.checkpoint.network_options``
when it has settings of its own).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Network:
    """One entry of :data:`NETWORKS`: its report label and ``build`` (``"module:function"``, see
    :func:`cervirad.segmentation.model.build_from_spec` for the ``spec`` it is given)."""

    label: str
    build: str

    def builder(self) -> Callable:
        """The builder function (its module imported now)."""
        module, _, name = self.build.partition(":")
        return getattr(importlib.import_module(module), name)


NETWORKS: dict[str, Network] = {
    "crfe": Network("CRFE", "cervirad.segmentation.model:build_crfe"),
    "unet": Network("U-Net", "cervirad.segmentation.model:build_unet"),
    "deeplabv3": Network("DeepLabv3", "cervirad.segmentation.model:build_deeplab"),
}
# segmentation.model may also be "auto": train every candidate and keep the best (segmentation/selection.py)
AUTO = "auto"


def network_label(arch: str) -> str:
    """The report's name of a network (its key when it is not registered)."""
    return NETWORKS[arch].label if arch in NETWORKS else str(arch)
