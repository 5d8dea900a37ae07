"""Inference: a checkpoint's network loaded, batched slice prediction, and whole volumes back on their own grid.

Checkpoints are read and checked by :mod:`.checkpoint`; :class:`LoadedModel` averages the members'
probabilities of a k-fold ensemble and applies the test-time mirroring and sliding window of
:mod:`.tta` (settings from the checkpoint's ``config`` unless given).

A new volume goes: read -> :func:`cervirad.preprocess.prepare_volume` (canonical orientation,
the training spacing, z-score, whole slices) -> batched prediction -> component selection when
training chose it -> :func:`cervirad.preprocess.restore_mask` (probabilities onto the input's
original grid, thresholded there: same size, spacing, origin and direction) -> NIfTI.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch

from ..config.schema import PreprocessConfig
from ..errors import InputError
from ..dicom.series import is_dicom
from ..files import read_json
from ..io import VOLUME_SUFFIXES, read_image, read_table, write_image
from ..preprocess import prepare_volume, restore_mask
from ..layout import case_file
from .checkpoint import read_checkpoint
from .context import stack_context
from .model import build_from_spec, optimise_for_inference, predict_proba
from .postprocess import Postprocessing, select_component
from .tta import predict as tta_predict

@dataclass
class LoadedModel:
    """A network (or a k-fold ensemble) ready for inference, the settings it was trained with and
    the test-time augmentation it runs with (:meth:`proba`)."""

    net: torch.nn.Module  # the first (or only) member
    info: dict
    device: torch.device
    members: list = field(default_factory=list)  # every fold's network; empty = [net]
    tta_mirror: bool = False  # average over the flips (segmentation.tta_mirror)
    sliding_window: str = "never"  # 'auto': Gaussian windows of the training patch on larger slices

    @property
    def nets(self) -> list[torch.nn.Module]:
        return list(self.members) or [self.net]

    @property
    def train_patch(self) -> int | None:
        """Side of the square patches the network was trained on (recorded in model.pt)."""
        if self.info.get("train_patch"):
            return int(self.info["train_patch"])
        cfg = self.info.get("config") or {}  # checkpoints written before train_patch was recorded
        side = (cfg.get("segmentation") or {}).get("train_crop") or (cfg.get("preprocess") or {}).get("slice_size")
        return int(side) if side else None

    def proba(self, x: torch.Tensor, both: bool = False) -> torch.Tensor:
        """Probabilities (B, H, W) of a batch (B, C, H, W): the mean over the ensemble's members,
        mirrored and windowed as configured (:mod:`.tta`); ``both``: (2B, H, W), plain then mirrored,
        from one pass."""
        nets = self.nets

        def mean_proba(t: torch.Tensor) -> torch.Tensor:
            p = predict_proba(nets[0], t)
            for n in nets[1:]:
                p = p + predict_proba(n, t)
            return p / len(nets)

        patch = self.train_patch if self.sliding_window == "auto" else None
        return tta_predict(mean_proba, x, self.tta_mirror, patch, both)

    @property
    def in_channels(self) -> int:
        """Channels of the network input (sequences x (2 · context + 1))."""
        return int(self.info["in_channels"])

    @property
    def context(self) -> int:
        """Neighbouring slices per side stacked as channels (0 in checkpoints written before 2.5-D)."""
        return int(self.info.get("context_slices", 0))

    @property
    def n_sequences(self) -> int:
        """Sequences the model reads (the input volumes per case)."""
        return self.in_channels // (2 * self.context + 1)

    @property
    def postprocessing(self) -> Postprocessing:
        """Threshold, component selection and the one-lesion rule chosen at training."""
        return Postprocessing.from_info(self.info)

    @property
    def sequences(self) -> list[str]:
        return list(self.info["input_sequences"])

    @property
    def component_selection(self) -> bool:
        """Whether training chose component selection on its validation patients."""
        return bool(self.info.get("component_selection", False))

    def preprocess_config(self) -> PreprocessConfig:
        p = self.info["preprocess"]
        return PreprocessConfig(spacing=tuple(p["spacing"]), normalize=p["normalize"], slice_axis=p["slice_axis"],
                                slice_size=p["slice_size"])


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("segmentation.device is 'cuda' but no CUDA device is available; set segmentation.device=auto "
                         "or cpu.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_from_checkpoint(ck: dict, source: str = "checkpoint") -> torch.nn.Module:
    """Rebuild the network described by ``ck`` and load its weights (strictly)."""
    net = build_from_spec(ck["arch"], ck)  # older checkpoints: rows recurrence, U-Net width 1.0 (.model)
    try:
        net.load_state_dict(ck["state_dict"], strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)[:160]
        raise InputError(f"Checkpoint {source} does not match architecture '{ck['arch']}' with {ck['in_channels']} "
                         f"input channel(s) ({first[:160]}); it was saved by another architecture or channel "
                         "count — retrain or pass the matching model.pt.") from None
    return net


def load_model(path: str | Path, device: str = "auto", expect_channels: int | None = None,
               expect_arch: str | None = None, tta_mirror: bool | None = None,
               sliding_window: str | None = None) -> LoadedModel:
    """Load ``model.pt`` for inference (conv+BN folded, channels-last) on ``device``: one network, or
    the folds of an ensemble (``folds``) that training kept (``inference.members``, :mod:`.cost`).
    ``tta_mirror``/``sliding_window`` None = what training decided or recorded (off for checkpoints
    written before they existed)."""
    ck = read_checkpoint(path)
    if expect_arch is not None and ck["arch"] != expect_arch:
        raise InputError(f"Checkpoint '{path}' is a '{ck['arch']}' model but '{expect_arch}' was requested; pass the "
                         f"{expect_arch} checkpoint or --model {ck['arch']}.")
    n_seq = int(ck["in_channels"]) // (2 * int(ck.get("context_slices", 0)) + 1)
    if expect_channels is not None and n_seq != expect_channels:
        raise InputError(f"Checkpoint '{path}' expects {n_seq} input sequence(s) "
                         f"({', '.join(ck['input_sequences'])}) but the data has {expect_channels}; set "
                         "segmentation.input_sequences to match or retrain.")
    dev = resolve_device(device)
    decided = ck.get("inference") or {}  # what training kept as worth its cost (.cost)
    keep = decided.get("members")
    folds = [f for i, f in enumerate(ck.get("folds") or []) if keep is None or f.get("fold", i) in keep]
    nets = [optimise_for_inference(model_from_checkpoint({**ck, "state_dict": f["state_dict"]},
                                                         f"'{path}' fold {f.get('fold', i)}")).to(dev)
            for i, f in enumerate(folds)] or [optimise_for_inference(model_from_checkpoint(ck, f"'{path}'")).to(dev)]
    info = {k: v for k, v in ck.items() if k not in ("state_dict", "optimizer", "scheduler", "folds")}
    if folds:
        info["folds"] = [{k: v for k, v in f.items() if k != "state_dict"} for f in folds]
    seg = (ck.get("config") or {}).get("segmentation") or {}
    mirror = bool(decided.get("tta_mirror", seg.get("tta_mirror", False))) if tta_mirror is None else bool(tta_mirror)
    window = str(seg.get("sliding_window", "never")) if sliding_window is None else str(sliding_window)
    return LoadedModel(nets[0], info, dev, nets if len(nets) > 1 else [], mirror, window)


def predict_slices(model: LoadedModel, images: np.ndarray, batch_size: int = 8,
                   both: bool = False) -> tuple[np.ndarray, float]:
    """Probabilities (S, H, W) for slices (S, C, H, W) of one volume (each slice with its context slices
    when the model was trained 2.5-D), and the network seconds spent. ``both``: (2, S, H, W), without and
    with mirroring, from one mirrored pass (:func:`.tta.plain_and_mirrored`)."""
    if images.shape[1] != model.n_sequences:
        raise InputError(f"Input has {images.shape[1]} channel(s) but the model expects {model.n_sequences} "
                         f"({', '.join(model.sequences)}); provide exactly those sequences.")
    out = np.empty(((2,) if both else ()) + (images.shape[0],) + images.shape[2:], dtype=np.float32)
    seconds = 0.0
    use_bf16 = model.device.type == "cuda"
    for s in range(0, images.shape[0], batch_size):
        idx = np.arange(s, min(s + batch_size, images.shape[0]))
        x = torch.from_numpy(stack_context(images, idx, model.context)).to(model.device)
        x = x.contiguous(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            p = model.proba(x, both)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        p = p.float().cpu().numpy()
        if both:
            out[:, s:s + len(x)] = p.reshape(2, len(x), *p.shape[1:])
        else:
            out[s:s + len(p)] = p
    return out, seconds


def postprocess(probs: np.ndarray, threshold: float, component_selection: bool) -> np.ndarray:
    """The probabilities that are exported: component selection when the training chose it."""
    return select_component(probs, threshold) if component_selection else probs


def restore_nonempty(probs: np.ndarray, meta: dict, reference: sitk.Image, threshold: float,
                     never_empty: bool) -> sitk.Image:
    """:func:`cervirad.preprocess.restore_mask`; with ``never_empty`` (one lesion per patient) a mask that
    restoration emptied (a component thinner than the original grid) becomes the voxel nearest to the
    maximum-probability point."""
    mask = restore_mask(probs, meta, reference, threshold)
    if not never_empty or sitk.GetArrayViewFromImage(mask).any():
        return mask
    from ..preprocess import grid_image

    grid = grid_image(np.asarray(probs, dtype=np.float32), meta)
    arr = sitk.GetArrayViewFromImage(grid)  # (z, y, x) of the canonical grid
    peak = np.unravel_index(int(np.argmax(arr)), arr.shape)
    point = grid.TransformIndexToPhysicalPoint(tuple(int(i) for i in peak[::-1]))
    index = reference.TransformPhysicalPointToIndex(point)
    size = reference.GetSize()
    index = tuple(int(min(max(i, 0), n - 1)) for i, n in zip(index, size))
    mask[index] = 1
    return mask


def segment_volume(model: LoadedModel, images: list[sitk.Image], batch_size: int = 8,
                   threshold: float | None = None, component_selection: bool | None = None,
                   stats: dict | None = None) -> sitk.Image:
    """Predicted mask of one case (one image per model sequence) on the first image's grid; ``stats``
    (a dict) receives the slice count and the network's seconds."""
    if len(images) != model.n_sequences:
        raise InputError(f"Model expects {model.n_sequences} sequence(s) ({', '.join(model.sequences)}) but "
                         f"{len(images)} volume(s) were given; provide exactly those sequences.")
    prep = prepare_volume(images, model.preprocess_config())
    probs, seconds = predict_slices(model, prep.image, batch_size)
    if stats is not None:
        stats.update(slices=len(probs), network_seconds=seconds)
    post = Postprocessing.from_info(model.info, threshold, component_selection)
    probs, _ = post.apply(probs)
    return restore_nonempty(probs, prep.meta, images[0], post.threshold, post.lesions == "one")


def _is_volume(p: Path) -> bool:
    return p.is_file() and any(p.name.lower().endswith(s) for s in VOLUME_SUFFIXES)


def _case_name(p: Path) -> str:
    name = p.name
    for s in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(s):
            return name[: -len(s)]
    return p.stem


def discover_cases(source: str | Path, sequences: list[str]) -> list[tuple[str, list[Path]]]:
    """Cases to segment: a volume file, a folder of volume files, or a manifest CSV.

    Single-sequence models accept a volume or a folder of volumes (one case per file).
    Multi-sequence models need a manifest CSV with an id column (``patient_id`` or ``id``) and
    one column per sequence the model was trained on.
    """
    src = Path(source)
    if not src.exists():
        raise InputError(f"Input '{src}' does not exist; pass a volume file, a folder of volumes or a manifest CSV.")
    if src.is_file() and src.suffix.lower() == ".csv":
        return _cases_from_manifest(src, sequences)
    if len(sequences) > 1:
        raise InputError(f"The model expects {len(sequences)} sequences ({', '.join(sequences)}) but input '{src}' "
                         f"is a single volume or folder; pass a manifest CSV with columns id,{','.join(sequences)}.")
    if src.is_file():
        return [(_case_name(src), [src])]
    files = sorted(f for f in src.iterdir() if _is_volume(f))
    if not files and any(is_dicom(f) for f in src.iterdir() if f.is_file()):  # a DICOM series folder: one case
        return [(src.name, [src])]
    if not files:
        raise InputError(f"Input folder '{src}' holds no volume files ({', '.join(VOLUME_SUFFIXES)}); put the volumes "
                         "to segment there or pass a manifest CSV.")
    return [(_case_name(f), [f]) for f in files]


def _cases_from_manifest(path: Path, sequences: list[str]) -> list[tuple[str, list[Path]]]:
    df = read_table(path, "manifest")
    id_col = next((c for c in ("patient_id", "id") if c in df.columns), None)
    missing = [s for s in sequences if s not in df.columns]
    if id_col is None or missing:
        raise InputError(f"Manifest '{path}' needs an id column (patient_id or id) and columns {sequences}; "
                         f"missing {missing or ['patient_id']}.")
    if df.empty:
        raise InputError(f"Manifest '{path}' lists no cases; add one row per case.")
    base = path.parent
    return [(str(r[id_col]), [Path(r[s]) if Path(r[s]).is_absolute() else base / r[s] for s in sequences])
            for _, r in df.iterrows()]


SEGMENT_MARKER = "segment.json"  # marks a `segment --out` folder as cervirad's: the model and the cases written


def segment_folder_marked(folder: Path) -> bool:
    """Was ``folder`` written by ``cervirad segment --out`` (it holds segment.json listing the cases)?"""
    try:
        return isinstance(read_json(Path(folder) / SEGMENT_MARKER).get("cases"), list)
    except (OSError, ValueError, AttributeError):
        return False


def segment_paths(model_path: str | Path, source: str | Path, out_dir: str | Path, device: str = "auto",
                  batch_size: int = 8, component_selection: bool | None = None,
                  formats: tuple[str, ...] = ("nifti",), say: Callable[[str], None] | None = None) -> list[Path]:
    """Segment every case of ``source`` with ``model_path``; write ``<out>/<case>.nii.gz`` (format
    ``nifti``) and/or ``<case>_seg.dcm`` / ``<case>_rtstruct.dcm`` (``dicom-seg`` / ``rtstruct``:
    only for a case whose first sequence is a DICOM series; they reference that series), and ``segment.json``
    (the folder's mark). No input file may lie in ``out`` (the cases' images included). ``say`` (e.g.
    ``typer.echo``) gets one line per case: its slices and seconds (read to written)."""
    from ..dicom.export import FORMATS, export_case, is_series
    from ..files import write_json
    from ..rundir import refuse_inputs_inside

    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InputError(f"Unknown --format {', '.join(bad) or '(none)'}; use {', '.join(FORMATS)}.")
    model = load_model(model_path, device)
    cases = discover_cases(source, model.sequences)
    dicom = tuple(f for f in formats if f != "nifti")
    if dicom:
        flat = [name for name, files in cases if not is_series(files[0])]
        if flat:
            raise InputError(f"--format {'/'.join(dicom)} needs DICOM input, but case '{flat[0]}' is a volume file "
                             f"({len(flat)} such case(s)); pass DICOM series folders or use --format nifti.")
    out = Path(out_dir)
    refuse_inputs_inside(out, "segment --out", [source, model_path, *(f for _, files in cases for f in files)])
    targets = [case_file(out, name, ".nii.gz") for name, _ in cases]
    seen: dict[Path, list[Path]] = {}
    for t, (_, files) in zip(targets, cases):
        if t in seen:
            raise InputError(f"Two inputs would write the same mask '{t.name}': '{seen[t][0]}' and '{files[0]}'; "
                             "rename one of them (case names come from the file names or the manifest ids).")
        seen[t] = files
    written = []
    how = (f"{len(model.nets)} model(s), mirroring {'on' if model.tta_mirror else 'off'}, sliding window "
           f"{model.sliding_window}")
    for (name, files), target in zip(cases, targets):
        t0, stats = time.perf_counter(), {}
        images = [read_image(f, name, seq) for f, seq in zip(files, model.sequences)]
        mask = segment_volume(model, images, batch_size, component_selection=component_selection, stats=stats)
        if "nifti" in formats:
            written.append(write_image(mask, target))
        written += export_case(mask, files[0], out, name, dicom)
        if say is not None:
            say(f"segment {name}: {stats['slices']} slices in {time.perf_counter() - t0:.1f} s "
                f"(network {stats['network_seconds']:.1f} s; {how})")
    write_json(out / SEGMENT_MARKER, {"model": str(Path(model_path).resolve()), "source": str(Path(source).resolve()),
                                      "cases": [Path(p).name for p in written]})
    return written
