"""Feature families computed beside PyRadiomics: one entry each, the only place that lists them.

A family is a pure array function ``compute(image_array, lesion_mask, **settings) -> {column: value}``
whose columns all start with ``prefix``. ``settings`` maps the ``features`` config keys it reads to
their name in each case's cache key (so a changed setting re-extracts the case). Everything else
follows from the entry:

- extraction (:mod:`.cases`) computes every family in a case's first part, after PyRadiomics'
  shape features, in the order of :data:`FAMILIES`;
- the table (:mod:`.stage`) counts its columns under ``name`` in ``column_counts.json``;
- the perturbation robustness (:mod:`.perturbation`) and the source ablation
  (:mod:`cervirad.classification.ablation`) treat it as a source of its own.

Adding a family: write its module (a pure function) and add one :class:`Family` row here; a new
setting is one field in ``FeaturesConfig`` (:mod:`cervirad.config`).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np


@dataclass(frozen=True)
class Family:
    name: str  # its category and ablation source
    prefix: str  # every column it writes starts with this
    compute: str  # "module:function", imported in the worker that runs it
    settings: Mapping[str, str] = field(default_factory=dict)  # features config key -> cache-key name

    def function(self) -> Callable[..., dict]:
        module, _, name = self.compute.partition(":")
        return getattr(importlib.import_module(module), name)


FAMILIES: tuple[Family, ...] = (
    # the paper's 9 OpenCV gray-level-histogram features (SPEC §6)
    Family("histogram", "hist_", "cervirad.features.histogram:lesion_histogram_features",
           {"histogram_bins": "bins"}),
)


# Every function reads FAMILIES when it is called, so a family added to the table is seen everywhere.
def names() -> tuple[str, ...]:
    return tuple(f.name for f in FAMILIES)


def family_settings(features_cfg: Any) -> dict[str, Any]:
    """The config values every family reads, by config key (a case job carries them to the worker)."""
    return {key: getattr(features_cfg, key) for fam in FAMILIES for key in fam.settings}


def cache_fields(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings under their cache-key names (the names the cache used before this registry)."""
    return {short: settings[key] for fam in FAMILIES for key, short in fam.settings.items()}


def compute_families(image: np.ndarray, roi: np.ndarray, settings: Mapping[str, Any]) -> dict[str, float]:
    """Every family's columns for one lesion, in registry order."""
    out: dict[str, float] = {}
    for fam in FAMILIES:
        out.update(fam.function()(image, roi, *(settings[key] for key in fam.settings)))
    return out


def family_of(name: str) -> Family | None:
    """The family whose prefix starts the column ``name`` (without a sequence prefix), else None."""
    return next((f for f in FAMILIES if name.startswith(f.prefix)), None)
