"""Config checks: each value's type (its annotation in :mod:`.schema`) and range, and the rules across keys.

:func:`build` turns a mapping into a section dataclass, refusing unknown keys and values of the wrong
type with their full key path (``segmentation.epochs: expected int, got 'ten'``); :func:`check_values`
then applies :data:`VALUE_RANGES` (the ranges are written in the small language of
:mod:`cervirad.ranges`), the grids of ``classification.grids`` (against each classifier's entry in
:mod:`cervirad.classifiers`) and the cross-key rules, raising the first problem and counting the rest.
A config that loads is one every stage accepts.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal, Union

from ..classifiers import CLASSIFIERS, RESERVED, SELECTORS
from ..errors import ConfigError
from ..layout import SAFE_ID
from ..ranges import COUNT, FRACTION, NONEMPTY, NONNEG, POSITIVE, PROB, KeyOf, Range, between, is_num, one_of

# classification.targets: the main target and the three binary sub-tasks of the pathological type
TARGETS = ("pathologic_typing", "large_cell", "non_keratinizing", "adenocarcinoma")


# --------------------------------------------------------------------------- types
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
        return build(tp, value, path)
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


def build(cls: type, data: dict, prefix: str = "") -> Any:
    """An instance of dataclass ``cls`` from a mapping: unknown keys refused, every value coerced to its annotation."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"Unknown config key '{where}{unknown[0]}'; valid keys here: {', '.join(sorted(names))}.")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


# --------------------------------------------------------------------------- value ranges
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

SIDE = between(STRIDE, integer=True, multiple=STRIDE)

# scalar keys (list keys: "[]" = every element, the list must not be empty; "[*]" = every element;
# "section.*" = every key of that section)
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
                                               lambda v: is_num(v, True) and (v == 0 or v >= 2)),
    "features.robustness.contour_amplitude": between(0, 5, lo_open=True),
    "features.robustness.rotation_deg": between(0, 45),
    "features.robustness.noise_fraction": between(0, 5, lo_open=True),
    "features.clinical_columns.*": NONEMPTY,
    "classification.models[]": KeyOf(CLASSIFIERS),
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
    "execution.n_jobs": Range("-1 or 0 (every CPU) or an integer >= 1", lambda v: is_num(v, True) and v >= -1),
    "execution.scheduler_address": Range("null or a non-empty address such as tcp://host:8786",
                                         lambda v: v is None or NONEMPTY.ok(v)),
    "report.dca_category": between(0, integer=True, null=True),
}


# --------------------------------------------------------------------------- checking
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


def _range_problems(cfg: Any) -> list[str]:
    out = []
    defaults = type(cfg)()
    for key, rule in VALUE_RANGES.items():
        if key.endswith(".*"):  # every key of a section
            section = key[:-2]
            keys = [f"{section}.{f.name}" for f in dataclasses.fields(_get(cfg, section))]
        else:
            keys = [key]
        for k in keys:
            out += _key_problems(cfg, defaults, k, rule)
    return out


def _key_problems(cfg: Any, defaults: Any, key: str, rule: Range) -> list[str]:
    out = []
    path, _, each = key.partition("[")
    value = _get(cfg, path)
    if not each:
        if not rule.ok(value):
            out.append(_problem(path, value, rule.expected, f"fix it in the config file or with --set "
                                f"{path}=VALUE (default {show(_get(defaults, path))})"))
        return out
    if each == "]" and len(value) == 0:
        out.append(_problem(path, value, f"a non-empty list of {_plural(rule.expected)}",
                            f"list at least one (default {show(_get(defaults, path))})"))
    return out + [_problem(f"{path}[{i}]", v, rule.expected) for i, v in enumerate(value) if not rule.ok(v)]


def _plural(expected: str) -> str:
    for a, b in (("an integer", "integers"), ("a number", "numbers"), ("a non-empty string", "non-empty strings")):
        if expected.startswith(a):
            return b + expected[len(a):]
    return f"values each {expected}"


def _grid_problems(grids: dict) -> list[str]:
    out = []
    for model, grid in grids.items():
        base = f"classification.grids.{model}"
        if model not in CLASSIFIERS:
            out.append(f"Config key '{base}': unknown model '{model}'; grids exist for {', '.join(CLASSIFIERS)}.")
            continue
        if not isinstance(grid, dict):
            out.append(_problem(base, grid, "a mapping of parameter: [values]"))
            continue
        params, ranges = CLASSIFIERS[model].params, CLASSIFIERS[model].ranges
        known = [p for p in params if p not in RESERVED]
        for param, values in grid.items():
            path = f"{base}.{param}"
            if param in RESERVED:
                out.append(f"Config key '{path}': '{param}' is set by cervirad and cannot be searched; remove it "
                           "from the grid.")
                continue
            if param not in params:
                near = difflib.get_close_matches(str(param), known, n=1)
                hint = f"did you mean '{near[0]}'? " if near else ""
                out.append(f"Config key '{path}': '{param}' is not a parameter of the {model} classifier; {hint}"
                           f"searchable parameters are {', '.join(known)}.")
                continue
            if not isinstance(values, list) or not values:
                out.append(_problem(path, values, "a non-empty list of values to search, e.g. [1, 10]"))
                continue
            rule = ranges.get(param)
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


def check_values(cfg: Any) -> None:
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


