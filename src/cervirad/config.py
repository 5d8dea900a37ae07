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
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import yaml

from . import presets
from .errors import ConfigError
from .files import hash_obj
from .layout import SAFE_ID

# the classifiers and feature selectors the classify stage knows (classification.models / .selectors)
MODELS = ("rf", "xgboost", "svm", "lr")
SELECTORS = ("rf", "anova", "rfe")
# classification.targets: the main target and the three binary sub-tasks of the pathological type
TARGETS = ("pathologic_typing", "large_cell", "non_keratinizing", "adenocarcinoma")


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
    # the ROI (RTSTRUCT) or segment (DICOM-SEG) of a DICOM contour mask: an exact name or a regular
    # expression matching the whole name, case-insensitive (null: the file's only ROI/segment)
    mask_roi: Optional[str] = None
    demo_patients: int = 100
    demo_seed: int = 7
    # the demo cohort's scanners: 2 puts some patients on a second scanner (other intensity scale, noise and
    # resolution; another class mix) and adds a `scanner` column to its clinical table (issue 24)
    demo_scanners: int = 1
    # the scanner / site / protocol of each patient (the ComBat batch): a column of the clinical table or the
    # manifest, or `auto` = DICOM Manufacturer + ManufacturerModelName + MagneticFieldStrength; null = none
    batch_column: Optional[str] = None
    # validate warns when a batch has fewer patients than this (ComBat's estimates get noisy)
    batch_min_patients: int = 20


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
    # nnU-Net's intensity and shape augmentations, each applied with this probability per slice (0 = off,
    # the paper's; the plan switches them on). Their ranges are nnU-Net's (segmentation/augment.py).
    elastic_p: float = 0.0  # elastic deformation (same displacement field for image and mask)
    gamma_p: float = 0.0  # gamma in [0.7, 1.5] on the image rescaled to [0, 1]
    brightness_p: float = 0.0  # multiplicative brightness in [0.75, 1.25]
    contrast_p: float = 0.0  # contrast in [0.75, 1.25] about the mean
    lowres_p: float = 0.0  # low-resolution simulation: downsampled by [0.5, 1], back up (cubic)
    blur_p: float = 0.0  # Gaussian blur, sigma [0.5, 1.0] px


@dataclass(frozen=True)
class SizePriorConfig:
    enabled: bool = False
    weight: float = 0.1
    min_diameter_mm: float = 10.0
    max_diameter_mm: float = 40.0


@dataclass(frozen=True)
class SegmentationConfig:
    # the run's network: crfe (the paper's), unet, deeplabv3, or auto = train every network of
    # ``compare`` (empty: all three) on the same split and keep the highest validation Dice
    model: Literal["crfe", "unet", "deeplabv3", "auto"] = "crfe"
    # networks trained beside the run's model on the same split (each in segmentation/<name>/, all in the
    # report's comparison table); with model auto, the candidates
    compare: tuple[Literal["crfe", "unet", "deeplabv3"], ...] = ()
    # sequences stacked as input channels (1 = T2W; 3 = T2W + DWI + ADC)
    input_sequences: tuple[str, ...] = ("t2w",)
    lstm_hidden: int = 256
    # CRFE's bidirectional LSTM scans the pooled bottleneck along its rows only, or along its rows and
    # then the columns of the result (ReNet: every position sees the whole slice; higher validation Dice
    # on the demo and the 18 STS volumes at equal budget, issue 16); stored in model.pt
    recurrence: Literal["rows", "rows+cols"] = "rows+cols"
    epochs: int = 100
    batch_size: int = 4
    lr: float = 1e-3
    # adam (the paper's) or sgd (nnU-Net's: Nesterov momentum 0.99, weight decay 3e-5, gradient norm <= 12)
    optimizer: Literal["adam", "sgd"] = "adam"
    # cosine annealing to 0 (the paper's), poly decay lr·(1 - e/epochs)^0.9 (nnU-Net's), or constant
    scheduler: Literal["cosine", "poly", "none"] = "cosine"
    # derive the training recipe from the cohort fingerprint (plan.yaml: spacing, patch, batch, epochs,
    # optimiser, sampling, augmentation, folds; segmentation/plan.py); a key set in the config to other than
    # its default wins over the plan. false = the fixed recipe of the config (paper.yaml)
    plan: bool = True
    # settings the plan leaves as configured even where they hold their default, e.g.
    # [segmentation.folds, segmentation.optimizer] (dotted keys the plan decides; see plan.yaml)
    plan_keep: tuple[str, ...] = ()
    # wall-clock minutes of the WHOLE train-seg stage (every fold model, the U-Net when it trains too, warm start
    # and scoring): the plan splits them across the models (plan.yaml: budget_split), turns each share into
    # epochs from a timing probe, re-plans after the first real epoch, and training stops when a share is spent
    # (null = no limit, epochs as configured)
    budget_minutes: Optional[float] = None
    # share of every training batch forced to contain lesion (nnU-Net's oversampling: the rest are random
    # slices, randomly cropped); null = the paper's sampler (every lesion slice + lesion_free_fraction)
    foreground_oversampling: Optional[float] = None
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
    # 2.5-D input: the k neighbouring slices on each side stacked as extra channels of every input sequence
    # (edge slices repeat; segmentation/context.py); 0 = the paper's 2-D. The plan chooses k from the slice
    # spacing when this holds its default; stored in model.pt
    context_slices: int = 0
    # a cohort property: 'one' = one primary tumour per patient (cervix, sarcoma): keep the single 3-D component
    # with the highest summed probability and never return an empty mask (fallback threshold chosen on the
    # validation patients; segmentation/postprocess.py); 'any' = as many lesions as the network finds
    lesions: Literal["one", "any"] = "any"
    # self-supervised warm start: minutes of masked-patch inpainting on the TRAINING patients' slices (no labels)
    # before supervised training, counted inside budget_minutes (segmentation/pretrain.py); 0 = off
    pretrain_minutes: float = 0.0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: Optional[int] = None
    also_train_unet: bool = False
    # U-Net baseline width multiplier on CRFE's 32/64/128 channels (1.0 = 0.57 M parameters); null =
    # the width whose parameter count is closest to CRFE's with the same settings (issue 13 item 13)
    unet_width: Optional[float] = None
    # DeepLabv3's ResNet-18 first-stage width (ResNet's own is 64); null = the width whose parameter count
    # is closest to CRFE's with the same settings (segmentation/deeplab.py)
    deeplab_base: Optional[int] = None
    # test-time mirroring: probabilities averaged over the slice as it is and flipped horizontally,
    # vertically and both ways (each flipped back first); stored in model.pt (segmentation/tta.py)
    tta_mirror: bool = True
    # Gaussian-weighted sliding window (nnU-Net: sigma = patch/8, step = patch/2) over slices larger than
    # the training patch: auto = only then, never = whole slices always (the paper's)
    sliding_window: Literal["auto", "never"] = "auto"
    # affordable inference (segmentation/cost.py): a fold ensemble is kept only when a 60-slice volume takes at
    # most this many seconds on the training machine (else its best member alone); null = always kept
    max_seconds_per_volume: Optional[float] = 30.0
    # k-fold ensemble: 1 = one model on the train/val split; K >= 2 = K models on the train+val patients split
    # into K folds (each fold's held-out part for early stopping), probabilities averaged at inference;
    # the test patients are in no fold (segmentation/folds.py)
    folds: int = 1
    bootstrap: int = 1000
    n_overlays: int = 4
    # the run's predicted masks, also written as DICOM when the patient's image is a DICOM series:
    # nifti (only <id>.nii.gz), dicom-seg and/or rtstruct (next to the NIfTI mask; dicom/export.py)
    export: tuple[Literal["nifti", "dicom-seg", "rtstruct"], ...] = ("nifti",)


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
class RobustnessConfig:
    """Feature robustness by image/mask perturbation (Zwanenburg et al., Sci Rep 2019): each training
    patient is extracted ``perturbations`` more times from a seeded chain, and every feature gets its
    ICC across them (features/robustness.csv; features/perturbation.py)."""

    perturbations: int = 0  # perturbed extractions per training patient; 0 = off, else >= 2
    volume: bool = True  # mask dilation/erosion by one voxel (each perturbation draws -1, 0 or +1)
    contour: bool = True  # random smooth boundary jitter of the mask
    contour_amplitude: float = 1.0  # its standard deviation, in in-plane voxels
    rotation: bool = True  # in-plane rotation of image and mask about the lesion centre
    rotation_deg: float = 10.0  # the angle is uniform in [-rotation_deg, +rotation_deg]
    translation: bool = True  # sub-voxel shift of image and mask, uniform in [-0.5, 0.5] voxel per axis
    noise: bool = True  # additive Gaussian noise
    noise_fraction: float = 1.0  # its sd as a fraction of the image's noise sd (wavelet MAD estimate)


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
    # perturbation robustness of every feature (off unless robustness.perturbations >= 2)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)


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
    # drop features whose perturbation ICC(1,1) (features/robustness.csv, training patients) is below this,
    # inside every fold before selection; null = off. Needs features.robustness.perturbations >= 2
    min_icc: Optional[float] = None
    permutation_repeats: int = 10
    # probabilities after SMOTE (classification/calibration.py): none | prior (undo SMOTE's class-prior
    # shift) | sigmoid | isotonic (CalibratedClassifierCV around the whole pipeline, on the training rows);
    # default prior: Brier better than none on radMLBench, AUC kept (sigmoid lost 0.06 AUC on small imbalanced
    # tables); numbers in README ("Calibration, Table 1, sub-tasks and sources"), scripts/bench/calibration.py
    calibration: Literal["none", "prior", "sigmoid", "isotonic"] = "prior"
    calibration_folds: int = 3  # stratified folds of the sigmoid / isotonic calibration
    # what to classify: pathologic_typing (the 0..7 category: classification/) and/or the binary
    # sub-tasks large_cell, non_keratinizing, adenocarcinoma (each on the same split and features:
    # classification/targets/<name>/); the main target always runs
    targets: tuple[str, ...] = ("pathologic_typing",)
    # source ablation of the final model (clinical only / radiomics only / histogram only / all):
    # classification/ablation.json
    ablation: bool = False
    # scanner harmonisation of the image features inside every fold (classification/harmonize.py): none (the
    # paper's) | combat (needs data.batch_column); its empirical-Bayes prior, and feature columns (e.g. clin_age)
    # whose effect ComBat keeps (never the label)
    harmonize: Literal["none", "combat"] = "none"
    harmonize_prior: Literal["parametric", "nonparametric"] = "parametric"
    harmonize_covariates: tuple[str, ...] = ()


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
    # statements only the study team can make (issue 23); the report's checklist shows "not reported" while empty:
    # how the reference masks were drawn (CLAIM 14/17), by whom (CLAIM 16), their agreement (CLAIM 18), and
    # how the sample size was arrived at (TRIPOD+AI 10)
    annotation_protocol: str = ""
    annotators: str = ""
    inter_reader_agreement: str = ""
    sample_size_statement: str = ""


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
        raise ConfigError(errors[0]) if len(errors) == 1 else ConfigError(
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
        if not math.isfinite(value):
            raise ConfigError(f"Config key '{path}': expected a finite number, got {value!r}; write a plain number.")
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


# --------------------------------------------------------------------------- value ranges
# Every value has a type (the annotations above, checked by _coerce) AND a range (below), checked at
# load: a config that loads is one every stage accepts.

# The segmentation network pools four times by 2 (segmentation/model.py MULTIPLE; a test keeps them equal):
# patch and slice sides are multiples of it.
STRIDE = 16
WAVELET_SUBBANDS = ("LLL", "LLH", "LHL", "LHH", "HLL", "HLH", "HHL", "HHH")

# classification.scoring: sklearn scorer names that work for a multi-class label and predict_proba
# (a subset of sklearn.metrics.get_scorer_names(); a test keeps it so). Binary-only scorers (f1, roc_auc,
# ...) and regression or clustering scores are refused at load.
SCORERS = (
    "accuracy", "balanced_accuracy", "f1_macro", "f1_micro", "f1_weighted", "precision_macro", "precision_micro",
    "precision_weighted", "recall_macro", "recall_micro", "recall_weighted", "jaccard_macro", "jaccard_micro",
    "jaccard_weighted", "roc_auc_ovr", "roc_auc_ovo", "roc_auc_ovr_weighted", "roc_auc_ovo_weighted", "neg_log_loss",
    "matthews_corrcoef",
)

# classification.grids.<model>: the parameters of cervirad.classification.estimators.make_classifier(model)
# (its get_params(); a test keeps this table equal to them), less those cervirad sets itself.
GRID_PARAMS: dict[str, tuple[str, ...]] = {
    "rf": ("bootstrap", "ccp_alpha", "class_weight", "criterion", "max_depth", "max_features", "max_leaf_nodes",
           "max_samples", "min_impurity_decrease", "min_samples_leaf", "min_samples_split",
           "min_weight_fraction_leaf", "monotonic_cst", "n_estimators", "n_jobs", "oob_score", "random_state",
           "verbose", "warm_start"),
    "xgboost": ("base_score", "booster", "callbacks", "colsample_bylevel", "colsample_bynode", "colsample_bytree",
                "device", "early_stopping_rounds", "enable_categorical", "eval_metric", "feature_types",
                "feature_weights", "gamma", "grow_policy", "importance_type", "interaction_constraints",
                "learning_rate", "max_bin", "max_cat_threshold", "max_cat_to_onehot", "max_delta_step", "max_depth",
                "max_leaves", "min_child_weight", "missing", "monotone_constraints", "multi_strategy", "n_estimators",
                "n_jobs", "num_parallel_tree", "objective", "random_state", "reg_alpha", "reg_lambda",
                "sampling_method", "scale_pos_weight", "subsample", "tree_method", "validate_parameters", "verbosity"),
    "svm": ("C", "break_ties", "cache_size", "class_weight", "coef0", "decision_function_shape", "degree", "gamma",
            "kernel", "max_iter", "probability", "random_state", "shrinking", "tol", "verbose"),
    "lr": ("C", "class_weight", "dual", "fit_intercept", "intercept_scaling", "l1_ratio", "max_iter", "n_jobs",
           "penalty", "random_state", "solver", "tol", "verbose", "warm_start"),
}
# set by cervirad (seed, workers, probabilities for every metric, quiet logs): not searchable
GRID_RESERVED = ("n_jobs", "random_state", "probability", "verbose", "verbosity", "callbacks")


@dataclass(frozen=True)
class Range:
    """What a value may be: ``expected`` in words, ``ok`` the test."""

    expected: str
    ok: Callable[[Any], bool]


def _is_num(v: Any, integer: bool = False) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) if integer else isinstance(v, (int, float)) and math.isfinite(v)


def between(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
            integer: bool = False, null: bool = False, multiple: int | None = None) -> Range:
    """A number (integer) in [lo, hi] (open ends with lo_open / hi_open), optionally null or a multiple."""
    kind = "an integer" if integer else "a number"
    if lo is not None and hi is not None:
        text = f"{kind} in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        text = f"{kind} {'>' if lo_open else '>='} {lo:g}"
    elif hi is not None:
        text = f"{kind} {'<' if hi_open else '<='} {hi:g}"
    else:
        text = kind
    if multiple:
        text += f" and a multiple of {multiple}"

    def ok(v: Any) -> bool:
        if v is None:
            return null
        if not _is_num(v, integer):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        if hi is not None and (v >= hi if hi_open else v > hi):
            return False
        return not multiple or v % multiple == 0

    return Range(("null or " if null else "") + text, ok)


def one_of(*choices: Any) -> Range:
    return Range("one of " + ", ".join("null" if c is None else repr(c) for c in choices), lambda v: v in choices)


def either(a: Range, b: Range) -> Range:
    return Range(f"{a.expected}, or {b.expected}", lambda v: a.ok(v) or b.ok(v))


NONEMPTY = Range("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()))
POSITIVE = between(0, lo_open=True)
NONNEG = between(0)
COUNT = between(1, integer=True)
FRACTION = between(0, 1, lo_open=True)  # (0, 1]
PROB = between(0, 1, lo_open=True, hi_open=True)  # (0, 1)
SIDE = between(STRIDE, integer=True, multiple=STRIDE)

# scalar keys (and list keys: "[]" = every element, the list must not be empty)
VALUE_RANGES: dict[str, Range] = {
    "run.name": Range("a plain name (letters, digits, '_', '-', '.', no leading '.', at most 128 characters: it names "
                      "the run folder under run.runs_root)", lambda v: isinstance(v, str) and bool(SAFE_ID.fullmatch(v))),
    "run.seed": between(0, integer=True),
    "run.runs_root": NONEMPTY,
    "data.id_column": NONEMPTY,
    "data.sequences[]": NONEMPTY,
    "data.mask_column": Range("null or a non-empty string", lambda v: v is None or NONEMPTY.ok(v)),
    "data.large_column": NONEMPTY,
    "data.non_keratinizing_column": NONEMPTY,
    "data.adenocarcinoma_column": NONEMPTY,
    "data.geometry_tolerance": between(0, 1, hi_open=True),
    "data.mask_label": between(1, integer=True, null=True),
    "data.mask_roi": Range("null or a non-empty string", lambda v: v is None or NONEMPTY.ok(v)),
    "data.demo_patients": between(10, integer=True),
    "data.demo_seed": between(0, integer=True),
    "data.demo_scanners": between(1, 2, integer=True),
    "data.batch_column": Range("null, `auto` or a non-empty column name", lambda v: v is None or NONEMPTY.ok(v)),
    "data.batch_min_patients": COUNT,
    "preprocess.spacing[]": POSITIVE,
    "preprocess.slice_size": SIDE,
    "preprocess.split.train": between(0, 1),
    "preprocess.split.val": between(0, 1),
    "preprocess.split.test": between(0, 1),
    "segmentation.input_sequences[]": NONEMPTY,
    "segmentation.lstm_hidden": COUNT,
    "segmentation.epochs": COUNT,
    "segmentation.batch_size": COUNT,
    "segmentation.lr": POSITIVE,
    "segmentation.budget_minutes": between(0, lo_open=True, null=True),
    "segmentation.foreground_oversampling": between(0, 1, null=True),
    "segmentation.early_stopping_patience": COUNT,
    "segmentation.early_stopping_min_delta": NONNEG,
    "segmentation.dice_weight": NONNEG,
    "segmentation.bce_weight": NONNEG,
    "segmentation.deep_supervision_weight": NONNEG,
    "segmentation.size_prior.weight": NONNEG,
    "segmentation.size_prior.min_diameter_mm": POSITIVE,
    "segmentation.size_prior.max_diameter_mm": POSITIVE,
    "segmentation.augmentation.rotation_deg": between(0, 180),
    "segmentation.augmentation.scale_min": POSITIVE,
    "segmentation.augmentation.scale_max": POSITIVE,
    "segmentation.augmentation.noise_sd": NONNEG,
    **{f"segmentation.augmentation.{k}_p": between(0, 1)
       for k in ("elastic", "gamma", "brightness", "contrast", "lowres", "blur")},
    "segmentation.lesion_free_fraction": between(0, 1, hi_open=True),
    "segmentation.max_train_slices_per_epoch": between(1, integer=True, null=True),
    "segmentation.train_crop": between(STRIDE, integer=True, null=True, multiple=STRIDE),
    "segmentation.max_val_slices": between(1, integer=True, null=True),
    "segmentation.infer_batch_size": COUNT,
    "segmentation.unet_width": between(0, lo_open=True, null=True),
    "segmentation.folds": COUNT,
    "segmentation.context_slices": between(0, 4, integer=True),
    "segmentation.pretrain_minutes": NONNEG,
    "segmentation.threshold": PROB,
    "segmentation.num_threads": between(1, integer=True, null=True),
    "segmentation.bootstrap": between(0, integer=True),
    "segmentation.n_overlays": between(0, integer=True),
    "features.radiomics_params": NONEMPTY,
    "features.wavelet_subbands[*]": Range(f"one of {', '.join(WAVELET_SUBBANDS)}",
                                          lambda v: isinstance(v, str) and v.upper() in WAVELET_SUBBANDS),
    "features.sequences[]": NONEMPTY,
    "features.histogram_bins": between(2, integer=True),
    "features.robustness.perturbations": Range("0 (off) or an integer >= 2 (an ICC needs two perturbations)",
                                               lambda v: _is_num(v, True) and (v == 0 or v >= 2)),
    "features.robustness.contour_amplitude": between(0, 5, lo_open=True),
    "features.robustness.rotation_deg": between(0, 45),
    "features.robustness.noise_fraction": between(0, 5, lo_open=True),
    **{f"features.clinical_columns.{f.name}": NONEMPTY for f in dataclasses.fields(ClinicalColumnsConfig)},
    "classification.models[]": one_of(*MODELS),
    "classification.selectors[]": one_of(*SELECTORS),
    "classification.k_grid[]": COUNT,
    "classification.cv_folds": between(2, integer=True),
    "classification.outer_folds": between(2, integer=True),
    "classification.repeats": COUNT,
    "classification.near_constant_threshold": between(0, 1, hi_open=True),
    "classification.bootstrap": between(0, integer=True),
    "classification.selector_trees": COUNT,
    "classification.rfe_step": PROB,
    "classification.smote_k_neighbors": COUNT,
    "classification.top_features": COUNT,
    "classification.permutation_repeats": COUNT,
    "classification.min_icc": between(0, 1, null=True),
    "classification.calibration_folds": between(2, integer=True),
    "classification.targets[]": one_of(*TARGETS),
    "classification.harmonize_covariates[*]": NONEMPTY,
    "execution.n_jobs": Range("-1 or 0 (every CPU) or an integer >= 1", lambda v: _is_num(v, True) and v >= -1),
    "execution.scheduler_address": Range("null or a non-empty address such as tcp://host:8786",
                                         lambda v: v is None or NONEMPTY.ok(v)),
    "report.dca_category": between(0, integer=True, null=True),
}

# classification.grids.<model>.<param>: the range of each listed value (parameters not named here are
# checked for being known to the estimator only)
_MAX_FEATURES = either(one_of("sqrt", "log2", None), either(COUNT, FRACTION))
GRID_RANGES: dict[str, dict[str, Range]] = {
    "rf": {
        "n_estimators": COUNT,
        "max_depth": between(1, integer=True, null=True),
        "min_samples_split": either(between(2, integer=True), FRACTION),
        "min_samples_leaf": either(COUNT, between(0, 1, lo_open=True, hi_open=True)),
        "max_features": _MAX_FEATURES,
        "max_leaf_nodes": between(2, integer=True, null=True),
        "max_samples": either(one_of(None), either(COUNT, FRACTION)),
        "criterion": one_of("gini", "entropy", "log_loss"),
        "class_weight": one_of(None, "balanced", "balanced_subsample"),
        "bootstrap": one_of(True, False),
        "ccp_alpha": NONNEG,
        "min_impurity_decrease": NONNEG,
        "min_weight_fraction_leaf": between(0, 0.5),
    },
    "xgboost": {
        "n_estimators": COUNT,
        "max_depth": between(0, integer=True, null=True),
        "learning_rate": POSITIVE,
        "gamma": NONNEG,
        "min_child_weight": NONNEG,
        "max_delta_step": NONNEG,
        "subsample": FRACTION,
        "colsample_bytree": FRACTION,
        "colsample_bylevel": FRACTION,
        "colsample_bynode": FRACTION,
        "reg_alpha": NONNEG,
        "reg_lambda": NONNEG,
        "max_leaves": between(0, integer=True, null=True),
        "max_bin": between(2, integer=True, null=True),
        "num_parallel_tree": between(1, integer=True, null=True),
    },
    "svm": {
        "C": POSITIVE,
        "gamma": either(one_of("scale", "auto"), NONNEG),
        "kernel": one_of("linear", "poly", "rbf", "sigmoid"),
        "degree": between(0, integer=True),
        "coef0": between(),
        "tol": POSITIVE,
        "class_weight": one_of(None, "balanced"),
        "shrinking": one_of(True, False),
    },
    "lr": {
        "C": POSITIVE,
        "penalty": one_of("l1", "l2", "elasticnet", None),
        "solver": one_of("lbfgs", "liblinear", "newton-cg", "newton-cholesky", "sag", "saga"),
        "l1_ratio": either(one_of(None), between(0, 1)),
        "max_iter": COUNT,
        "tol": POSITIVE,
        "class_weight": one_of(None, "balanced"),
        "fit_intercept": one_of(True, False),
    },
}


def show(value: Any) -> str:
    """A value as the user wrote it (YAML-like: null, true, 0.5, 'text', [1, 2]); numpy scalars shown plainly
    (``3.0``, never ``np.float64(3.0)``)."""
    if hasattr(value, "item") and type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _get(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _problem(path: str, value: Any, expected: str, fix: str = "") -> str:
    key, _, index = path.partition("[")
    fix = fix or f"fix it in the config file or with --set {key}={'[...]' if index else 'VALUE'}"
    return f"Config key '{path}': expected {expected}, got {show(value)}; {fix}."


def _range_problems(cfg: Config) -> list[str]:
    out = []
    defaults = Config()
    for key, rule in VALUE_RANGES.items():
        path, _, each = key.partition("[")
        value = _get(cfg, path)
        if not each:
            if not rule.ok(value):
                out.append(_problem(path, value, rule.expected, f"fix it in the config file or with --set "
                                    f"{path}=VALUE (default {show(_get(defaults, path))})"))
            continue
        if each == "]" and len(value) == 0:
            out.append(_problem(path, value, f"a non-empty list of {_plural(rule.expected)}",
                                f"list at least one (default {show(_get(defaults, path))})"))
        out += [_problem(f"{path}[{i}]", v, rule.expected) for i, v in enumerate(value) if not rule.ok(v)]
    return out


def _plural(expected: str) -> str:
    for a, b in (("an integer", "integers"), ("a number", "numbers"), ("a non-empty string", "non-empty strings")):
        if expected.startswith(a):
            return b + expected[len(a):]
    return f"values each {expected}"


def _grid_problems(grids: dict) -> list[str]:
    out = []
    for model, grid in grids.items():
        base = f"classification.grids.{model}"
        if model not in MODELS:
            out.append(f"Config key '{base}': unknown model '{model}'; grids exist for {', '.join(MODELS)}.")
            continue
        if not isinstance(grid, dict):
            out.append(_problem(base, grid, "a mapping of parameter: [values]"))
            continue
        known = [p for p in GRID_PARAMS[model] if p not in GRID_RESERVED]
        for param, values in grid.items():
            path = f"{base}.{param}"
            if param in GRID_RESERVED:
                out.append(f"Config key '{path}': '{param}' is set by cervirad and cannot be searched; remove it "
                           "from the grid.")
                continue
            if param not in GRID_PARAMS[model]:
                near = difflib.get_close_matches(str(param), known, n=1)
                hint = f"did you mean '{near[0]}'? " if near else ""
                out.append(f"Config key '{path}': '{param}' is not a parameter of the {model} classifier; {hint}"
                           f"searchable parameters are {', '.join(known)}.")
                continue
            if not isinstance(values, list) or not values:
                out.append(_problem(path, values, "a non-empty list of values to search, e.g. [1, 10]"))
                continue
            rule = GRID_RANGES[model].get(param)
            if rule is None:
                bad = [(i, v) for i, v in enumerate(values) if isinstance(v, (dict, list))]
                out += [_problem(f"{path}[{i}]", v, "a single value (number, string, true/false or null)")
                        for i, v in bad]
            else:
                out += [_problem(f"{path}[{i}]", v, rule.expected) for i, v in enumerate(values) if not rule.ok(v)]
    return out


def check_scoring(name: str) -> str | None:
    """None when ``name`` is a usable classification.scoring, else what is wrong with it."""
    if name in SCORERS:
        return None
    from sklearn.metrics import get_scorer_names  # only on error: the message says why it is refused

    if name in get_scorer_names():
        return (f"Config key 'classification.scoring': '{name}' is an sklearn scorer but not one for a multi-class "
                f"label with probabilities (binary-only, multi-label, regression or clustering); use one of "
                f"{', '.join(SCORERS)}.")
    return (f"Config key 'classification.scoring': unknown scorer {show(name)}; use one of {', '.join(SCORERS)} "
            "(default 'f1_macro').")


def _check_values(cfg: Config) -> None:
    """Every range and cross-key rule; the first problem is raised, naming how many more there are."""
    problems = _range_problems(cfg)
    scoring = check_scoring(cfg.classification.scoring)  # a str: _coerce checked the type
    problems += [scoring] if scoring else []
    problems += _grid_problems(cfg.classification.grids)
    s = cfg.preprocess.split
    if min(s.train, s.val, s.test) < 0 or abs(s.train + s.val + s.test - 1.0) > 1e-6:
        problems.append(f"Config key 'preprocess.split': train/val/test must be >= 0 and sum to 1, got "
                        f"{show(s.train)}/{show(s.val)}/{show(s.test)}; e.g. 0.7/0.15/0.15.")
    if cfg.data.source == "manifest" and not cfg.data.manifest:
        problems.append("Config key 'data.manifest' is empty but data.source is 'manifest'; give the manifest CSV "
                        "path.")
    dupes = sorted({q for q in cfg.data.sequences if cfg.data.sequences.count(q) > 1})
    if dupes:
        problems.append(f"Config key 'data.sequences': {dupes} listed twice; list each sequence once.")
    for key in ("segmentation.input_sequences", "features.sequences"):
        missing = [q for q in _get(cfg, key) if q not in cfg.data.sequences]
        if missing:
            problems.append(f"Config key '{key}': {missing} not in data.sequences {list(cfg.data.sequences)}; "
                            "add them there or remove them here.")
    a, sp = cfg.segmentation.augmentation, cfg.segmentation.size_prior
    if a.scale_max < a.scale_min:
        problems.append(f"Config key 'segmentation.augmentation': scale_max ({show(a.scale_max)}) is below "
                        f"scale_min ({show(a.scale_min)}); swap them.")
    if sp.max_diameter_mm < sp.min_diameter_mm:
        problems.append(f"Config key 'segmentation.size_prior': max_diameter_mm ({show(sp.max_diameter_mm)}) is "
                        f"below min_diameter_mm ({show(sp.min_diameter_mm)}); swap them.")
    if cfg.classification.min_icc is not None and cfg.features.robustness.perturbations == 0:
        problems.append(f"Config key 'classification.min_icc' is {show(cfg.classification.min_icc)} but "
                        "features.robustness.perturbations is 0: there is no ICC to filter by; set "
                        "features.robustness.perturbations (e.g. 5) or classification.min_icc: null.")
    if cfg.segmentation.deeplab_base is not None and cfg.segmentation.deeplab_base < 4:
        problems.append(f"Config key 'segmentation.deeplab_base' is {cfg.segmentation.deeplab_base}; give a width of at "
                        "least 4 (ResNet-18's is 64) or null for the width matching CRFE's size.")
    if cfg.segmentation.dice_weight == 0 and cfg.segmentation.bce_weight == 0:
        problems.append("Config keys 'segmentation.dice_weight' and 'segmentation.bce_weight' are both 0: the network "
                        "would learn nothing; set at least one > 0 (defaults 1.0).")
    if problems:
        more = len(problems) - 1
        names = sorted({p.split("'")[1] for p in problems[1:] if p.count("'") >= 2})
        raise ConfigError(problems[0] + (f" (+{more} more problem(s): {', '.join(names[:8])}"
                                         f"{' ...' if len(names) > 8 else ''})" if more else ""))


# limits on a YAML document, checked on the parser's events and the composed node graph BEFORE any
# Python object is built: a config is a few kB, nested a few levels deep
YAML_MAX_BYTES = 1 << 20  # 1 MiB
YAML_MAX_DEPTH = 64  # nested lists/mappings
YAML_MAX_NODES = 100_000  # scalars + collections after alias expansion (an alias bomb expands exponentially)


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` with limits on size, nesting depth and alias expansion, checked before anything is
    built; a one-line :class:`ConfigError` naming ``where`` for every bad document (syntax, python tags,
    limits)."""
    if len(text) > YAML_MAX_BYTES:
        raise ConfigError(f"{where} is {len(text)} characters, more than the {YAML_MAX_BYTES} allowed; a config "
                          "is a few kB - pass the right file.")
    try:
        depth = 0
        for ev in yaml.parse(text, Loader=yaml.SafeLoader):  # events: no recursion, nothing built
            if isinstance(ev, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > YAML_MAX_DEPTH:
                    line = ev.start_mark.line + 1 if ev.start_mark else "?"
                    raise ConfigError(f"{where} nests lists/mappings more than {YAML_MAX_DEPTH} levels deep (line "
                                      f"{line}); a config is a few levels deep - fix the file.")
            elif isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
        node = yaml.compose(text, Loader=yaml.SafeLoader)  # aliases stay shared nodes: nothing expanded
        _count_nodes(node, where)
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = getattr(e, "problem", None) or (str(e).splitlines()[0] if str(e).strip() else type(e).__name__)
        mark = getattr(e, "problem_mark", None)
        first += f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{where} is not valid YAML: {first[:200]}; fix the syntax (plain YAML only: no "
                          "!!python tags).") from None


def _count_nodes(root: Any, where: str) -> None:
    """Refuse a node graph whose alias-expanded size exceeds YAML_MAX_NODES. Memoised by node, so linear in the
    graph, not in its expansion; recursion is bounded by YAML_MAX_DEPTH (checked on the events first)."""
    size: dict[int, int] = {}

    def count(n: Any) -> int:
        if id(n) not in size:
            kids = n.value if isinstance(n, yaml.SequenceNode) else \
                [c for kv in n.value for c in kv] if isinstance(n, yaml.MappingNode) else []
            total = 1 + sum(count(c) for c in kids)
            if total > YAML_MAX_NODES:
                raise ConfigError(f"{where} expands to more than {YAML_MAX_NODES} values (aliases '*name' repeating "
                                  f"anchors, line {n.start_mark.line + 1}); write the values out - a config needs "
                                  "no such expansion.")
            size[id(n)] = total
        return size[id(n)]

    if root is not None:
        count(root)


def read_yaml_file(p: Path) -> Any:
    """A YAML file (UTF-8, BOM allowed) through :func:`parse_yaml`; one-line ConfigError otherwise."""
    try:
        if p.stat().st_size > YAML_MAX_BYTES:
            raise ConfigError(f"Config file '{p}' is {p.stat().st_size} bytes, more than the {YAML_MAX_BYTES} "
                              "allowed; a config is a few kB - pass the right file.")
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"Config file '{p}' cannot be read ({e.strerror or type(e).__name__}); pass a "
                          "readable YAML file.") from None
    if raw[:4] == b"PK\x03\x04" or raw[:4] == b"\xd0\xcf\x11\xe0":
        raise ConfigError(f"Config file '{p}' is a zip or Office file (e.g. an Excel workbook), not YAML text; "
                          "pass a YAML config.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(f"Config file '{p}' is not UTF-8 text: byte 0x{e.object[e.start]:02x} on line {line} "
                          "cannot be decoded; save the file as UTF-8.") from None
    return parse_yaml(text, f"Config file '{p}'")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    data: dict = {}
    if path is not None:
        p = presets.resolve(path, kind="config")  # a file path, or a packaged preset name such as `demo`
        data = read_yaml_file(p) or {}
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
        value = parse_yaml(raw, f"Override '{key.strip()}'")
    except ConfigError as e:
        if "not valid YAML" in str(e):
            value = raw  # plain text that is not YAML (e.g. a path with ': '): taken as written
        else:
            raise
    node = data
    parts = key.strip().split(".")
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"Override '{item}': '{p}' is not a section.")
        node = nxt
    node[parts[-1]] = value
