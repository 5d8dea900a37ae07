"""PyRadiomics extraction of one (image, mask) pair, driven by a native PyRadiomics parameter file.

The parameter file (``configs/radiomics/*.yaml``) keeps PyRadiomics' own keys (``setting``,
``imageType``, ``featureClass``) and is validated by PyRadiomics' own schema, so an unknown
key is refused with its path. :func:`extract_radiomics` follows
``RadiomicsFeatureExtractor.execute`` step by step (load, normalise, resample/crop, check the
mask, shape on the original image, then every enabled image type) with one addition:
PyRadiomics' wavelet filter yields all 8 sub-bands, and sub-bands not in ``subbands`` are
skipped before any feature is computed on them (the paper keeps LLL and HHH).
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from .. import presets
from ..errors import ConfigError

WAVELET_SUBBANDS = ("LLL", "LLH", "LHL", "LHH", "HLL", "HLH", "HHL", "HHH")
# PyRadiomics validates parameters with a YAML parser that is not thread-safe
_EXTRACTOR_LOCK = threading.Lock()


def resolve_params_path(path: str | Path) -> Path:
    """An existing file path, else the packaged preset (``radiomics/paper.yaml``, ``paper``, ...).

    :class:`ConfigError` (one line, listing the presets) when neither exists.
    """
    return presets.resolve(path, kind="radiomics")


def load_params(path: str | Path) -> dict:
    """Read and validate a PyRadiomics parameter file; one-line :class:`ConfigError` if it is invalid."""
    p = resolve_params_path(path)
    try:
        params = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"Radiomics parameter file '{p}' is not valid YAML: {str(e).splitlines()[0]}; "
                          "fix the syntax.") from None
    validate_params(params, str(p))
    return params


def validate_params(params: dict, where: str = "<dict>") -> None:
    """Check ``params`` against PyRadiomics' parameter schema (the same check PyRadiomics runs)."""
    import pykwalify.core
    from pykwalify.errors import PyKwalifyException
    from radiomics import getParameterValidationFiles

    if not isinstance(params, dict):
        raise ConfigError(f"Radiomics parameter file '{where}' must hold a mapping with setting/imageType/"
                          f"featureClass, got {type(params).__name__}.")
    logging.getLogger("pykwalify").setLevel(logging.CRITICAL)
    schema, funcs = getParameterValidationFiles()
    try:
        with _EXTRACTOR_LOCK:
            pykwalify.core.Core(source_data=params, schema_files=[schema], extensions=[funcs]).validate()
    except PyKwalifyException as e:
        msg = " ".join(str(getattr(e, "msg", e)).split())
        msg = msg.replace("Validation failed reason: ", "").replace("<SchemaError: error code 2: ", "").rstrip(">:")
        raise ConfigError(f"Radiomics parameter file '{where}' is invalid: {msg[:300]}; "
                          "use only PyRadiomics keys (see pyradiomics.readthedocs.io, 'Customizing the "
                          "extraction').") from None
    except (ValueError, TypeError) as e:  # raised by PyRadiomics' schema extension functions
        raise ConfigError(f"Radiomics parameter file '{where}' is invalid: {str(e).splitlines()[0][:300]}; "
                          "fix the value.") from None


def check_subbands(subbands: Iterable[str]) -> tuple[str, ...]:
    """Upper-cased wavelet sub-band names; ConfigError for anything not one of the 8."""
    out = tuple(s.upper() for s in subbands)
    bad = [s for s in out if s not in WAVELET_SUBBANDS]
    if bad:
        raise ConfigError(f"Config key 'features.wavelet_subbands': {bad} are not wavelet sub-bands; "
                          f"choose from {list(WAVELET_SUBBANDS)}.")
    return out



def _extractor(params_json: str):
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    return featureextractor.RadiomicsFeatureExtractor(json.loads(params_json))


def make_extractor(params: dict):
    """A (per-process cached) ``RadiomicsFeatureExtractor`` for ``params``.

    Built under a lock: PyRadiomics validates parameters with a YAML parser that is not
    thread-safe, and a dask worker runs several cases in threads of one process.
    """
    with _EXTRACTOR_LOCK:
        return _extractor(json.dumps(params, sort_keys=True))


def _keep(image_type_name: str, subbands: tuple[str, ...] | None) -> bool:
    """False for a wavelet output (``wavelet-LLH``, ``wavelet2-HHH``) whose sub-band is not kept."""
    if subbands is None or not image_type_name.startswith("wavelet"):
        return True
    return image_type_name.split("-", 1)[-1] in subbands


@dataclass
class Prepared:
    """One case after PyRadiomics' preprocessing: what every feature computation of the case reads."""

    extractor: Any
    settings: dict
    image: Any  # normalised, resampled (cropped to the lesion box + padDistance)
    shape_mask: Any  # the mask shape features see (resegmented only with resegmentShape)
    mask: Any  # the mask every other class sees (resegmented when resegmentRange is set)
    bbox: Any
    diagnostics: dict[str, str]


def prepare(image: Any, mask: Any, params: dict) -> Prepared:
    """Load, normalise, resample and check one case exactly as ``RadiomicsFeatureExtractor.execute``
    does (``image``/``mask``: SimpleITK images on one grid); PyRadiomics errors propagate as ``ValueError``."""
    from radiomics import generalinfo, imageoperations

    ex = make_extractor(params)
    settings = ex.settings.copy()
    info = None
    if settings.get("additionalInfo", True):
        info = generalinfo.GeneralInfo()
        info.addGeneralSettings(settings)
        info.addEnabledImageTypes(ex.enabledImagetypes)
    image, mask = ex.loadImage(image, mask, info, **settings)
    bbox, corrected = imageoperations.checkMask(image, mask, **settings)
    if corrected is not None:
        mask = corrected
    if bbox is None:
        raise ValueError("mask check failed (no valid ROI)")
    reseg = None
    if settings.get("resegmentRange") is not None:
        reseg = imageoperations.resegmentMask(image, mask, **settings)
        bbox, _ = imageoperations.checkMask(image, reseg, **settings)
        if info is not None:
            info.addMaskElements(image, reseg, settings.get("label", 1), "resegmented")
    diagnostics = {k: _as_text(v) for k, v in (info.getGeneralInfo() if info is not None else {}).items()}
    shape_mask = reseg if settings.get("resegmentShape", False) and reseg is not None else mask
    return Prepared(ex, settings, image, shape_mask, reseg if reseg is not None else mask, bbox, diagnostics)


def image_units(params: dict) -> list[tuple[str, dict]]:
    """The case's feature computations after shape, in PyRadiomics' order: one ``(image type, custom
    arguments)`` per enabled image type, LoG split into one unit per sigma (each sigma is its own
    filter). Computing the units one by one gives exactly the values of one full extraction."""
    units = []
    for image_type, custom in make_extractor(params).enabledImagetypes.items():
        custom = dict(custom or {})
        if image_type == "LoG" and len(custom.get("sigma", [])) > 1:
            units += [(image_type, {**custom, "sigma": [s]}) for s in custom["sigma"]]
        else:
            units.append((image_type, custom))
    return units


def compute_shape(prep: Prepared) -> dict[str, float]:
    """Shape features (empty unless the shape classes are enabled)."""
    return {k: float(v) for k, v in prep.extractor.computeShape(prep.image, prep.shape_mask, prep.bbox,
                                                                 **prep.settings).items()}


def compute_unit(prep: Prepared, image_type: str, custom: dict,
                 subbands: tuple[str, ...] | None = None) -> dict[str, float]:
    """Every enabled feature class on the image(s) of one unit (see :func:`image_units`)."""
    from radiomics import imageoperations

    args = {**prep.settings, **custom}
    features: dict[str, float] = {}
    for filtered, name, kwargs in getattr(imageoperations, f"get{image_type}Image")(prep.image, prep.mask, **args):
        if not _keep(name, subbands):
            continue
        cropped, cmask = imageoperations.cropToTumorMask(filtered, prep.mask, prep.bbox)
        features.update(prep.extractor.computeFeatures(cropped, cmask, name, **kwargs))
    return {k: float(v) for k, v in features.items()}


def extract_radiomics(image: Any, mask: Any, params: dict,
                      subbands: tuple[str, ...] | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """Features and diagnostics for one case (``image``/``mask``: SimpleITK images on one grid).

    Follows ``RadiomicsFeatureExtractor.execute`` (segment-based): :func:`prepare`, shape, then every
    enabled image type; PyRadiomics errors (e.g. a mask too small for ``minimumROIDimensions``)
    propagate as ``ValueError``.
    """
    prep = prepare(image, mask, params)
    features = compute_shape(prep)
    for image_type, custom in image_units(params):
        features.update(compute_unit(prep, image_type, custom, subbands))
    return features, prep.diagnostics


def _as_text(v: Any) -> str:
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, default=str)
    return str(v)
