"""Typed, frozen configuration: ``from cervirad.config import Config, load_config``.

* :mod:`.schema`: the dataclasses (one per pipeline stage section, :class:`Config` holding them);
* :mod:`.checks`: each value's type and range and the rules across keys, checked once at load;
* :mod:`.loading`: YAML reading within size limits, packaged presets, ``--set`` overrides:
  :func:`load_config`, :func:`from_dict`, :func:`with_overrides`.

The classifiers and segmentation networks a config may name are registered in
:mod:`cervirad.classifiers` and :mod:`cervirad.networks`.
"""
from __future__ import annotations

from .checks import SCORERS, STRIDE, TARGETS, VALUE_RANGES, WAVELET_SUBBANDS, check_scoring, check_values, show
from .loading import (YAML_MAX_BYTES, YAML_MAX_DEPTH, YAML_MAX_NODES, apply_override, from_dict, load_config,
                      parse_yaml, read_yaml_file, with_overrides)
from .schema import (AugmentationConfig, ClassificationConfig, ClinicalColumnsConfig, Config, DataConfig,
                     ExecutionConfig, FeaturesConfig, PreprocessConfig, ReportConfig, RobustnessConfig, RunConfig,
                     SegmentationConfig, SizePriorConfig, SplitConfig)

__all__ = [
    "AugmentationConfig", "ClassificationConfig", "ClinicalColumnsConfig", "Config", "DataConfig", "ExecutionConfig",
    "FeaturesConfig", "PreprocessConfig", "ReportConfig", "RobustnessConfig", "RunConfig", "SegmentationConfig",
    "SizePriorConfig", "SplitConfig",
    "SCORERS", "STRIDE", "TARGETS", "VALUE_RANGES", "WAVELET_SUBBANDS", "check_scoring", "check_values", "show",
    "YAML_MAX_BYTES", "YAML_MAX_DEPTH", "YAML_MAX_NODES", "apply_override", "from_dict", "load_config", "parse_yaml",
    "read_yaml_file", "with_overrides",
]
