"""Typed, frozen configuration.

One frozen dataclass per pipeline stage; the defaults are the paper's settings
(``../shared/SPEC.md``). A YAML file is validated once, at load: unknown keys and
values of the wrong type are refused with their full key path, e.g.
``segmentation.epochs: expected int, got 'ten'``.

Command-line overrides use dotted paths: ``--set segmentation.epochs=2``; the value
is parsed as YAML (``--set classification.models=[rf,lr]``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from . import presets
from .errors import ConfigError

# the classifiers and feature selectors the classify stage knows (classification.models / .selectors)
MODELS = ("rf", "xgboost", "svm", "lr")
SELECTORS = ("rf", "anova", "rfe")


# --------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    seed: int = 42
    runs_root: str = "runs"


@dataclass(frozen=True)
class DataConfig:
    # "demo": generate the synthetic demo cohort into <run>/cohort; "manifest": use your files.
    source: Literal["demo", "manifest"] = "demo"
    manifest: Optional[str] = None
    clinical: Optional[str] = None
    id_column: str = "patient_id"
    sequences: tuple[str, ...] = ("t2w", "dwi", "adc")
    mask_column: Optional[str] = "mask"
    # the three binary pathology columns of the clinical table (SPEC §1)
    large_column: str = "large_cell"
    non_keratinizing_column: str = "non_keratinizing"
    adenocarcinoma_column: str = "adenocarcinoma"
    # tolerance (relative, on spacing/origin/direction) for "same grid" checks (validate, extract-features)
    geometry_tolerance: float = 1e-3
    # the lesion's label in a multi-label mask (null: masks must be binary 0/1)
    mask_label: Optional[int] = None
    demo_patients: int = 100
    demo_seed: int = 7


@dataclass(frozen=True)
class SplitConfig:
    train: float = 0.70
    val: float = 0.15
    test: float = 0.15
    stratify: bool = True


@dataclass(frozen=True)
class PreprocessConfig:
    # output spacing (x, y, z) in mm; B-spline for images, nearest neighbour for masks
    spacing: tuple[float, float, float] = (0.7, 0.7, 4.0)
    # z-score statistics over the whole volume or over the body (voxels above an Otsu threshold)
    normalize: Literal["volume", "body"] = "volume"
    # slices are cut along this patient axis of the canonical (LPS) grid; spacing is (column, row, thickness)
    slice_axis: Literal["axial", "coronal", "sagittal"] = "axial"
    # side of the square training patches (slices are stored whole; see segmentation.train_crop)
    slice_size: int = 256
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass(frozen=True)
class AugmentationConfig:
    rotation_deg: float = 15.0
    flip_horizontal: bool = True
    flip_vertical: bool = True
    scale_min: float = 0.9
    scale_max: float = 1.1
    noise_sd: float = 0.01


@dataclass(frozen=True)
class SizePriorConfig:
    enabled: bool = False
    weight: float = 0.1
    min_diameter_mm: float = 10.0
    max_diameter_mm: float = 40.0


@dataclass(frozen=True)
class SegmentationConfig:
    model: Literal["crfe", "unet"] = "crfe"
    # sequences stacked as input channels (1 = T2W; 3 = T2W + DWI + ADC)
    input_sequences: tuple[str, ...] = ("t2w",)
    lstm_hidden: int = 256
    epochs: int = 100
    batch_size: int = 4
    lr: float = 1e-3
    scheduler: Literal["cosine", "none"] = "cosine"
    early_stopping_patience: int = 10
    early_stopping_min_delta: float = 0.001
    dice_weight: float = 1.0
    bce_weight: float = 1.0
    deep_supervision: bool = False
    deep_supervision_weight: float = 0.3
    size_prior: SizePriorConfig = field(default_factory=SizePriorConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    # share of lesion-free slices among training slices each epoch (0 = lesion slices only)
    lesion_free_fraction: float = 0.25
    # cap on training slices per epoch (None = all)
    max_train_slices_per_epoch: Optional[int] = None
    # side of the square training patches (None = preprocess.slice_size, the paper's 256); the network
    # is fully convolutional, so validation and inference always run on whole slices
    train_crop: Optional[int] = None
    # cap on validation slices scored per epoch for early stopping (None = every val slice)
    max_val_slices: Optional[int] = None
    infer_batch_size: int = 8
    threshold: float = 0.5
    # keep only the connected component with the highest summed probability: "auto" decides on the
    # validation patients after training (kept only if it raises their Dice), "always"/"never" force it
    component_selection: Literal["auto", "always", "never"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: Optional[int] = None
    also_train_unet: bool = False
    bootstrap: int = 1000
    n_overlays: int = 4

    def __post_init__(self) -> None:
        checks = [("lesion_free_fraction", 0.0 <= self.lesion_free_fraction < 1.0, "a number in [0, 1)"),
                  ("train_crop", self.train_crop is None or self.train_crop >= 16, "null or an integer >= 16"),
                  ("epochs", self.epochs >= 1, "an integer >= 1"),
                  ("batch_size", self.batch_size >= 1, "an integer >= 1"),
                  ("threshold", 0.0 < self.threshold < 1.0, "a number in (0, 1)")]
        for key, ok, expected in checks:
            if not ok:
                raise ConfigError(f"Config key 'segmentation.{key}': expected {expected}, got {getattr(self, key)!r}.")


@dataclass(frozen=True)
class ClinicalColumnsConfig:
    """Clinical-table column holding each of the paper's 8 clinical variables (SPEC §1)."""

    age: str = "age"
    hpv_status: str = "hpv_status"
    figo_stage: str = "figo_stage"
    lymph_node_metastasis: str = "lymph_node_metastasis"
    lymphovascular_invasion: str = "lymphovascular_invasion"
    invasion_depth_cm: str = "invasion_depth_cm"
    chemotherapy: str = "chemotherapy"
    radiotherapy: str = "radiotherapy"


@dataclass(frozen=True)
class FeaturesConfig:
    # native PyRadiomics parameter file (relative paths: to the working directory, else to the repo)
    radiomics_params: str = "configs/radiomics/paper.yaml"
    # wavelet sub-bands kept (PyRadiomics computes all 8; the paper uses the low- and high-pass LLL, HHH)
    wavelet_subbands: tuple[str, ...] = ("LLL", "HHH")
    sequences: tuple[str, ...] = ("t2w",)
    masks: Literal["manual", "predicted"] = "manual"
    histogram_bins: int = 256
    include_treatment: bool = False
    clinical_columns: ClinicalColumnsConfig = field(default_factory=ClinicalColumnsConfig)
    # add clin_<variable>_missing (1 = the clinical cell was missing) next to each clinical variable
    clinical_missing_indicators: bool = False
    # reuse per-case results in <run>/cache/features/ when image, mask and settings are unchanged
    cache: bool = True


@dataclass(frozen=True)
class ClassificationConfig:
    models: tuple[str, ...] = MODELS
    selectors: tuple[str, ...] = SELECTORS
    k_grid: tuple[int, ...] = (5, 10, 20, 30, 50, 100)
    cv_folds: int = 5
    outer_folds: int = 5
    repeats: int = 1
    scoring: str = "f1_macro"
    smote: bool = True
    near_constant_threshold: float = 0.0
    bootstrap: int = 1000
    grids: dict[str, dict[str, list]] = field(
        default_factory=lambda: {
            "rf": {
                "n_estimators": [50, 100, 200, 300],
                "max_depth": [None, 10, 20, 30],
                "min_samples_split": [2, 5, 10],
            },
            "xgboost": {"n_estimators": [100, 300], "max_depth": [3, 6], "learning_rate": [0.05, 0.1]},
            "svm": {"C": [0.1, 1.0, 10.0], "gamma": ["scale", 0.01]},
            "lr": {"C": [0.01, 0.1, 1.0, 10.0]},
        }
    )
    selector_trees: int = 100  # trees of the random-forest importance selector
    rfe_step: float = 0.1  # share of the remaining features RFE drops per round
    smote_k_neighbors: int = 5  # upper bound; lowered per fold to (smallest class - 1)
    smote_singleton: Literal["random", "none"] = "random"  # one-member class: duplicate it, or leave it
    top_features: int = 30  # bars in the feature-importance figures
    permutation_repeats: int = 10

    def __post_init__(self) -> None:
        bad = [m for m in self.models if m not in MODELS]
        bad += [s for s in self.selectors if s not in SELECTORS]
        if bad or not self.models or not self.selectors:
            raise ConfigError(f"Config key 'classification.models/selectors': unknown or empty entry {bad or '[]'}; "
                              f"models are {', '.join(MODELS)} and selectors {', '.join(SELECTORS)}.")
        if min(self.cv_folds, self.outer_folds) < 2 or self.repeats < 1 or self.bootstrap < 0:
            raise ConfigError("Config key 'classification': cv_folds and outer_folds must be >= 2, repeats >= 1, "
                              "bootstrap >= 0.")
        if not 0.0 <= self.near_constant_threshold < 1.0 or not 0.0 < self.rfe_step < 1.0:
            raise ConfigError("Config key 'classification': near_constant_threshold must be in [0, 1) and rfe_step "
                              "in (0, 1).")


@dataclass(frozen=True)
class ExecutionConfig:
    n_jobs: int = -1
    backend: Literal["loky", "dask"] = "loky"
    scheduler_address: Optional[str] = None

    @property
    def workers(self) -> int:
        """Worker count: ``n_jobs``, with -1 or 0 meaning every CPU of the machine."""
        return max(1, os.cpu_count() or 1) if self.n_jobs in (-1, 0) else max(1, self.n_jobs)


@dataclass(frozen=True)
class ReportConfig:
    dca_category: Optional[int] = 6


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    classification: ClassificationConfig = field(default_factory=ClassificationConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    # ---------------------------------------------------------------- helpers
    def to_dict(self) -> dict:
        return _to_plain(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def hash(self) -> str:
        return hash_obj(self.to_dict())

    def with_overrides(self, overrides: list[str]) -> "Config":
        d = self.to_dict()
        for item in overrides:
            apply_override(d, item)
        return from_dict(d)


# --------------------------------------------------------------------------- loading
def hash_obj(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against annotation ``tp``; return it converted (lists -> tuples)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"Config key '{path}': expected a mapping (section), got {value!r}; fix the YAML indentation.")
        return _build(tp, value, path)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, path)
            except ConfigError as e:
                errors.append(str(e))
        raise errors[0] if len(errors) == 1 else ConfigError(
            f"Config key '{path}': value {value!r} matches none of {', '.join(_type_name(a) for a in args)}.")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"Config key '{path}': expected one of {list(args)}, got {value!r}.")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"Config key '{path}': expected a list, got {value!r}.")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"Config key '{path}': expected a list of {len(args)} values, got {len(value)}.")
        return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (list,):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"Config key '{path}': expected a list, got {value!r}.")
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"Config key '{path}': expected a mapping, got {value!r}.")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, f"{path}.{k}"): _coerce(v, vt, f"{path}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"Config key '{path}': expected a number, got {value!r}.")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"Config key '{path}': expected an integer, got {value!r}.")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"Config key '{path}': expected true or false, got {value!r}.")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"Config key '{path}': expected a string, got {value!r}.")
        return value
    return value


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"Unknown config key '{where}{unknown[0]}'; valid keys here: {', '.join(sorted(names))}.")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def from_dict(data: dict | None) -> Config:
    cfg = _build(Config, data or {})
    _check_values(cfg)
    return cfg


def _check_values(cfg: Config) -> None:
    s = cfg.preprocess.split
    if min(s.train, s.val, s.test) < 0 or abs(s.train + s.val + s.test - 1.0) > 1e-6:
        raise ConfigError(
            f"Config key 'preprocess.split': train/val/test must be >= 0 and sum to 1, got {s.train}/{s.val}/{s.test}.")
    if cfg.data.source == "manifest" and not cfg.data.manifest:
        raise ConfigError("Config key 'data.manifest' is empty but data.source is 'manifest'; give the manifest CSV path.")
    missing = [q for q in cfg.segmentation.input_sequences if q not in cfg.data.sequences]
    if missing:
        raise ConfigError(
            f"Config key 'segmentation.input_sequences': {missing} not in data.sequences {list(cfg.data.sequences)}.")
    missing = [q for q in cfg.features.sequences if q not in cfg.data.sequences]
    if missing:
        raise ConfigError(f"Config key 'features.sequences': {missing} not in data.sequences {list(cfg.data.sequences)}.")
    if any(k < 1 for k in cfg.classification.k_grid):
        raise ConfigError("Config key 'classification.k_grid': every k must be >= 1.")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    data: dict = {}
    if path is not None:
        p = presets.resolve(path, kind="config")  # a file path, or a packaged preset name such as `demo`
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"Config file '{p}' is not valid YAML: {str(e).splitlines()[0]}; fix the syntax.") from None
        if not isinstance(data, dict):
            raise ConfigError(f"Config file '{p}' must hold a mapping of sections, got {type(data).__name__}.")
    for item in overrides or []:
        apply_override(data, item)
    return from_dict(data)


def apply_override(data: dict, item: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to a nested dict in place."""
    if "=" not in item:
        raise ConfigError(f"Override '{item}' has no '='; write it as section.key=value, e.g. segmentation.epochs=2.")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    node = data
    parts = key.strip().split(".")
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"Override '{item}': '{p}' is not a section.")
        node = nxt
    node[parts[-1]] = value
