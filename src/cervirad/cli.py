"""The ``cervirad`` command line: parse, load the config, call the stage, report.

Heavy libraries (torch, radiomics, sklearn, xgboost) are imported inside the command
bodies so that ``cervirad --help`` is instant. A :class:`CerviradError` becomes one line on
stderr and exit code 2; anything else is an internal error, exit code 1.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from . import presets
from .errors import CerviradError

app = typer.Typer(
    name="cervirad",
    help="Cervical-cancer MRI -> CRFE lesion segmentation -> radiomics -> leakage-safe pathological-type classifier.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

log = logging.getLogger("cervirad")
TABLE_CONFIG = presets.packaged("table.yaml")  # cervirad/configs/table.yaml, inside the installed package

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config (see configs/).")
RunDirOpt = typer.Option(None, "--run-dir", help="Run directory (default: <run.runs_root>/<run.name>).")
SetOpt = typer.Option([], "--set", help="Override a config value, e.g. --set segmentation.epochs=2 (repeatable).")
ForceOpt = typer.Option(False, "--force", help="Redo this stage even if it is up to date; replace another run's "
                        "artifacts in --run-dir.")


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("radiomics", "distributed", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def load(config: Optional[Path], overrides: List[str]):
    from .config import load_config

    return load_config(config, overrides)


def load_run(config: Optional[Path], overrides: List[str], run_dir: Optional[Path]):
    """The validated config and its run directory (nothing written yet). Without --config, an
    existing --run-dir's own resolved config.yaml is the starting point."""
    from .layout import Layout
    from .rundir import open_run

    if config is None and run_dir is not None and Layout(run_dir).config_yaml.is_file():
        config = Layout(run_dir).config_yaml
    cfg = load(config, overrides)
    return cfg, open_run(cfg, run_dir)


def run_targets(config: Optional[Path], overrides: List[str], run_dir: Optional[Path], targets: List[str],
                force: bool = False):
    """Bring ``targets`` of the stage table up to date (with what they need); the config and run."""
    from .pipeline import run_stages

    cfg, run = load_run(config, overrides, run_dir)
    run_stages(cfg, run, targets, force=force)
    return cfg, run


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    _setup_logging(verbose)


# --------------------------------------------------------------------------- foundation
@app.command("demo-data")
def demo_data(
    out: Path = typer.Option(..., "--out", help="Folder to write the cohort into."),
    patients: int = typer.Option(100, "--patients", help="Number of patients."),
    seed: int = typer.Option(7, "--seed", help="Random seed (same seed, same bytes)."),
    site: str = typer.Option("A", "--site", help="A: the development cohort; B: a second hospital for external "
                             "validation (other scanner intensities, noise and spacing, some sagittal storage, "
                             "another class mix, ids EX001...)."),
    force: bool = typer.Option(False, "--force", help="Write into a folder holding a manifest.csv or clinical.csv "
                               "that demo-data did not write (they are replaced)."),
    scanners: int = typer.Option(1, "--scanners", help="2: some site-A patients on a second scanner (other "
                                 "intensity scale, noise, resolution and class mix; a `scanner` clinical column)."),
) -> None:
    """Write the synthetic demo cohort (manifest, clinical CSV, NIfTI volumes and masks)."""
    from .demo import SITES, write_demo_cohort
    from .errors import InputError

    site = site.upper()
    if not 0 <= seed <= MAX_SEED:
        raise InputError(f"demo-data --seed {seed}: expected an integer in [0, {MAX_SEED}]; pass e.g. --seed 7.")
    if not 10 <= patients <= MAX_DEMO_PATIENTS:
        raise InputError(f"demo-data --patients {patients}: expected an integer in [10, {MAX_DEMO_PATIENTS}] (each "
                         "patient is ~1 MB of volumes); pass e.g. --patients 100.")
    if site not in SITES:
        raise InputError(f"demo-data --site '{site}': choose one of {', '.join(SITES)}.")
    if scanners not in (1, 2) or (scanners == 2 and site != "A"):
        raise InputError(f"demo-data --scanners {scanners}: use 1, or 2 with --site A (site B is one scanner).")
    _check_demo_out(out, force)
    manifest, clinical = write_demo_cohort(out, patients, seed, site, scanners)
    typer.echo(f"demo cohort (site {site}{', two scanners' if scanners == 2 else ''}): {patients} patients -> "
               f"{manifest} and {clinical}")


MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_DEMO_PATIENTS = 10_000


def _check_writable(path: Path, flag: str) -> None:
    """``path`` can be created: its nearest existing ancestor is a folder we may write into."""
    from .errors import InputError

    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"{flag} '{path}': '{parent}' is a file, not a folder; choose another path.")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{flag} '{path}': folder '{parent}' is not writable; choose another path or fix its "
                         "permissions.")


def _check_demo_out(out: Path, force: bool) -> None:
    """demo-data writes a folder, never over a file nor over a cohort it did not write (without --force)."""
    import json

    from .errors import InputError
    from .rundir import refuse_inside_run

    if out.exists() and not out.is_dir():
        raise InputError(f"demo-data --out '{out}' is a file; give a folder (it is created if missing).")
    refuse_inside_run(out, "demo-data --out")
    _check_writable(out / "manifest.csv", "demo-data --out")
    theirs = [n for n in ("manifest.csv", "clinical.csv") if (out / n).exists()]
    if not theirs or force:
        return
    try:
        stamp = json.loads((out / "demo.json").read_text(encoding="utf-8"))
        ours = isinstance(stamp, dict) and {"patients", "seed", "version"} <= set(stamp)
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise InputError(f"demo-data --out '{out}' already holds {' and '.join(theirs)} not written by demo-data "
                         "(no demo.json); choose an empty folder, or pass --force to replace them.")


def _check_predict_out(target: Path, features: Path, model: Path, force: bool) -> None:
    """predict writes a file: never a folder, never an input, never a file it did not write (without --force),
    never inside a run folder's own entries (the next run would delete it)."""
    from .errors import InputError
    from .rundir import refuse_inside_run

    refuse_inside_run(target, "predict --out")
    if target.is_dir():
        raise InputError(f"predict --out '{target}' is a folder; give a file name such as "
                         f"'{target / 'predictions.csv'}'.")
    for flag, src in (("--features", features), ("--model", model)):
        if target.exists() and src.exists() and target.resolve() == src.resolve():
            raise InputError(f"predict --out '{target}' is the input {flag} file; choose another output file "
                             "(inputs are never overwritten).")
    _check_writable(target, "predict --out")
    if target.exists() and not force and not _is_predictions(target):
        raise InputError(f"predict --out '{target}' exists and was not written by cervirad predict (no 'predicted' "
                         "and 'prob_*' columns); choose another file, or pass --force to replace it.")


def _is_predictions(path: Path) -> bool:
    """Does ``path`` hold a table written by ``cervirad predict`` (a 'predicted' and 'prob_*' columns)?"""
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            cols = list(pq.read_schema(path).names)
        else:
            from .io import read_header

            cols = read_header(path)
    except Exception:  # unreadable: not ours
        return False
    return "predicted" in cols and any(c.startswith("prob_") for c in cols)


def _manifest_overrides(manifest: Path, clinical: Optional[Path]) -> List[str]:
    """Config overrides for a bare ``--manifest``: sequences are the manifest's image columns."""
    from .config import DataConfig
    from .io import read_header

    out = ["data.source=manifest", f"data.manifest={manifest}"] + ([f"data.clinical={clinical}"] if clinical else [])
    if not manifest.is_file():
        return out
    header = read_header(manifest, "manifest")  # UTF-8 (BOM dropped), delimiter detected, as the manifest is read
    d = DataConfig()
    seqs = [c for c in header if c not in (d.id_column, d.mask_column, "series")]
    if seqs:
        out += [f"data.sequences={seqs}", f"segmentation.input_sequences=[{seqs[0]}]", f"features.sequences=[{seqs[0]}]"]
    return out


@app.command()
def validate(
    config: Optional[Path] = ConfigOpt,
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Manifest CSV (instead of --config)."),
    clinical: Optional[Path] = typer.Option(None, "--clinical", help="Clinical CSV keyed by patient id."),
    run_dir: Optional[Path] = RunDirOpt,
    force: bool = ForceOpt,
    overrides: List[str] = SetOpt,
) -> None:
    """Check a cohort (files, masks, geometry, ids, pathology columns) and write fingerprint.json."""
    import json

    if config is None and manifest is None:
        raise CerviradError("validate needs --config FILE or --manifest FILE; pass one of them.")
    if manifest is not None:
        overrides = [*overrides, *_manifest_overrides(manifest, clinical)]
    _, run = run_targets(config, overrides, run_dir, ["validate"], force)
    fp = json.loads(run.fingerprint.read_text(encoding="utf-8"))
    typer.echo(f"validate: {fp['n_patients']} patients OK, class counts {fp['class_counts'] or 'n/a'}; "
               f"fingerprint -> {run.fingerprint}")


@app.command("index-dicom")
def index_dicom(
    root: Path = typer.Argument(..., help="Folder with one sub-folder of DICOM files per patient."),
    out: Path = typer.Option(..., "--out", help="The manifest CSV to write (outside the DICOM tree)."),
    series: List[str] = typer.Option([], "--series", help="SEQUENCE=REGEX on SeriesDescription (repeatable; "
                                      "default t2w='T2.*(TSE|FSE)|T2W', dwi='DWI|diffusion', adc='ADC|Apparent')."),
    modality: str = typer.Option("MR", "--modality", help="Modality of the image series ('any': no check)."),
    roi: Optional[str] = typer.Option(None, "--roi", help="The mask's ROI/segment name or regular expression "
                                      "(picks among several RTSTRUCT/SEG; as data.mask_roi)."),
    masks: bool = typer.Option(True, "--masks/--no-masks", help="Look for the RTSTRUCT/SEG of each patient."),
    ids: str = typer.Option("folder", "--ids", help="Patient ids: 'folder' (folder names) or 'patient-id' "
                            "(the DICOM PatientID; opt-in)."),
    skip_incomplete: bool = typer.Option(False, "--skip-incomplete", help="Leave out patients with a missing or "
                                         "ambiguous series or mask (listed) instead of failing."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file."),
) -> None:
    """Index a DICOM tree: one series per sequence and the RTSTRUCT/SEG per patient -> a manifest CSV."""
    import pandas as pd

    from .dicom.index import index_tree, parse_rules
    from .io import write_table

    if ids not in ("folder", "patient-id"):
        raise CerviradError(f"Unknown --ids '{ids}'; use --ids folder or --ids patient-id.")
    root_r, out_r = root.resolve(), out.resolve()
    if root_r == out_r.parent or root_r in out_r.parents:
        raise CerviradError(f"index-dicom --out '{out}' is inside the DICOM tree '{root}'; write the manifest "
                            "elsewhere (cervirad never writes into its inputs).")
    if out.is_symlink() or out.is_dir() or (out.exists() and not force):
        raise CerviradError(f"index-dicom --out '{out}' already exists; pass another path or --force to replace "
                            "the file.")
    rules = parse_rules(series)
    rows, problems = index_tree(root, rules, None if modality.lower() == "any" else modality, roi, masks,
                                ids == "patient-id")
    for line in problems:
        typer.echo(f"index-dicom: {line}", err=True)
    if problems and not skip_incomplete:
        raise CerviradError(f"index-dicom: {len(problems)} problem(s) in '{root}' (listed above); fix them, or pass "
                            "--skip-incomplete to leave those patients out.")
    if not rows:
        raise CerviradError(f"index-dicom: no complete patient in '{root}'; check the --series rules and --roi.")
    columns = ["patient_id", *rules, *(["mask"] if masks else [])]
    write_table(pd.DataFrame(rows, columns=columns), out)
    left = f", {len(problems)} left out (listed above)" if problems else ""
    typer.echo(f"index-dicom: {len(rows)} patient(s){left} -> {out}")


@app.command()
def preprocess(
    config: Optional[Path] = ConfigOpt,
    run_dir: Optional[Path] = RunDirOpt,
    force: bool = ForceOpt,
    overrides: List[str] = SetOpt,
) -> None:
    """Resample, z-score, slice to 256 x 256 and write the one patient-level split (splits.json)."""
    import json

    _, run = run_targets(config, overrides, run_dir, ["preprocess"], force)
    summary = json.loads(run.preprocess_summary.read_text(encoding="utf-8"))
    ps = summary["per_split"]
    typer.echo(f"preprocess: {summary['slices_with_lesion']} slices with lesion, {summary['slices_without_lesion']} "
               f"without; patients train/val/test = {ps['train']['patients']}/{ps['val']['patients']}/"
               f"{ps['test']['patients']} -> {run.path}")


@app.command()
def plan(
    config: Optional[Path] = ConfigOpt,
    run_dir: Optional[Path] = RunDirOpt,
    force: bool = ForceOpt,
    overrides: List[str] = SetOpt,
) -> None:
    """Derive the training plan (spacing, patch, batch, epochs, recipe, folds) from the cohort -> plan.yaml."""
    import yaml

    _, run = run_targets(config, overrides, run_dir, ["plan"], force)
    p = yaml.safe_load(run.plan.read_text(encoding="utf-8"))
    shown = ", ".join(f"{k.split('.')[-1]} {d['value']}" for k, d in p["decisions"].items()
                      if d["source"] == "plan" and not k.startswith("segmentation.augmentation."))
    typer.echo(f"plan: {shown or 'the config fixes the recipe (segmentation.plan: false)'}; folds {p['folds']} -> "
               f"{run.plan}")


@app.command("train-seg")
def train_seg(
    config: Optional[Path] = ConfigOpt,
    run_dir: Optional[Path] = RunDirOpt,
    model: Optional[str] = typer.Option(None, "--model", help="crfe, unet, deeplabv3 or auto (default: "
                                        "segmentation.model)."),
    folds: Optional[int] = typer.Option(None, "--folds", help="K >= 2: a K-fold ensemble on the train+val "
                                        "patients (default: segmentation.folds; 1 = one model)."),
    force: bool = ForceOpt,
    overrides: List[str] = SetOpt,
) -> None:
    """Train the CRFE (U-Net, DeepLabv3, or the best of them) network, then score it on the test patients (a killed
    training resumes)."""
    import json

    from .segmentation.selection import homes

    if model is not None and model not in ("crfe", "unet", "deeplabv3", "auto"):
        raise CerviradError(f"--model must be crfe, unet, deeplabv3 or auto, got {model!r}; pick one of them.")
    if model is not None:
        overrides = [*overrides, f"segmentation.model={model}"]
    if folds is not None:
        overrides = [*overrides, f"segmentation.folds={folds}"]
    cfg, run = run_targets(config, overrides, run_dir, ["train-seg"], force)
    for arch, home in homes(run, cfg.segmentation).items():
        m = json.loads(home.metrics.read_text(encoding="utf-8"))
        typer.echo(f"train-seg {arch}: test Dice {m['dice']['value']:.4f} "
                   f"[{m['dice']['ci_low']:.4f}, {m['dice']['ci_high']:.4f}], best epoch {m['best_epoch']} -> "
                   f"{home.dir}")
        if m.get("single_fold_test"):
            typer.echo(f"train-seg {arch}: {m['n_folds']}-fold ensemble test Dice {m['dice']['value']:.4f} vs fold 0 "
                       f"alone {m['single_fold_test']['dice']['value']:.4f}")
    if cfg.segmentation.model == "auto":
        pick = json.loads(run.seg_metrics().read_text(encoding="utf-8"))["selection"]
        typer.echo(f"train-seg auto: the run's model is {pick['chosen']} ({pick['why']}) -> {run.segmentation_dir()}")


@app.command()
def segment(
    model: Optional[Path] = typer.Option(None, "--model", help="A model.pt from train-seg."),
    input: Optional[Path] = typer.Option(None, "--input", help="Volume file, folder of volumes, or manifest CSV."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the predicted masks (<case>.nii.gz)."),
    config: Optional[Path] = ConfigOpt,
    run_dir: Optional[Path] = RunDirOpt,
    force: bool = typer.Option(False, "--force", help="With --run-dir and --model: replace the run's own "
                               "segmentation results with this model's. With --out: write into a folder holding "
                               "files cervirad did not write (never over an input)."),
    formats: List[str] = typer.Option(["nifti"], "--format", help="nifti, dicom-seg or rtstruct (repeatable); "
                                      "the DICOM formats need DICOM input and reference its series."),
    overrides: List[str] = SetOpt,
) -> None:
    """Segment new volumes (--model --input --out), or re-score a run's test patients (--config/--run-dir)."""
    from . import segmentation

    if input is not None or out is not None:
        if model is None or input is None or out is None:
            raise CerviradError("segment on files needs --model PATH --input FILE_OR_DIR --out DIR; pass all three.")
        from .rundir import claim_output_folder

        claim_output_folder(out, "segment --out", force=force, inputs=[input, model],
                            owned=segmentation.segment_folder_marked)
        written = segmentation.segment_paths(model, input, out, formats=tuple(formats), say=typer.echo)
        typer.echo(f"segment: {len(written)} mask(s) -> {out}")
        return
    if config is None and run_dir is None:
        raise CerviradError("segment needs --model/--input/--out, or --config FILE [--run-dir DIR] to score a run's "
                            "test patients.")
    from .pipeline import rescore_segmentation

    cfg, run = load_run(config, overrides, run_dir)
    m = rescore_segmentation(cfg, run, model, force)
    typer.echo(f"segment {m['model']}: test Dice {m['dice']['value']:.4f} over {m['n_patients']} patients -> "
               f"{run.seg_metrics()}")


@app.command("extract-features")
def extract_features(
    config: Optional[Path] = ConfigOpt,
    run_dir: Optional[Path] = RunDirOpt,
    masks: Optional[str] = typer.Option(None, "--masks", help="manual (the cohort's masks) or predicted "
                                        "(the test masks of train-seg); default features.masks."),
    force: bool = ForceOpt,
    overrides: List[str] = SetOpt,
) -> None:
    """PyRadiomics + histogram + clinical features per patient -> <run>/features/features.parquet."""
    from . import features

    cfg = load(config, overrides)
    masks = masks or cfg.features.masks
    if masks not in ("manual", "predicted"):
        raise CerviradError(f"Unknown mask source '{masks}'; use --masks manual or --masks predicted.")
    _, run = run_targets(config, overrides, run_dir, ["features" if masks == "manual" else "features-predicted"],
                         force)
    typer.echo(f"extract-features: {features.summary(run.features_dir(masks))} -> {run.features_dir(masks)}")


@app.command()
def classify(
    config: Optional[Path] = ConfigOpt,
    run_dir: Optional[Path] = RunDirOpt,
    features_table: Optional[Path] = typer.Option(None, "--features", help="Any feature table (CSV/Parquet) "
                                                  "instead of the run's features.parquet."),
    id_column: str = typer.Option("patient_id", "--id-column", help="With --features: the id column."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="With --features: the label column."),
    out: Optional[Path] = typer.Option(None, "--out", help="With --features: output folder (default "
                                       "<runs_root>/<run.name>)."),
    force: bool = ForceOpt,
    overrides: List[str] = SetOpt,
) -> None:
    """Tune and compare RF/XGBoost/SVM/LR (selection + SMOTE inside CV) -> <run>/classification/."""
    import json

    from .pipeline import classify_table
    from .layout import SUMMARY, Layout

    if features_table is not None and config is None:
        config = TABLE_CONFIG  # lighter grids in the paper's ranges: a 260 x 264 table in < 5 min
    if features_table is not None:
        if label_column is None:
            raise CerviradError("classify --features needs --label-column NAME (and --id-column NAME); pass it.")
        cfg = load(config, overrides)
        target = Path(out or run_dir or Path(cfg.run.runs_root) / cfg.run.name)
        s = classify_table(cfg, features_table, id_column, label_column, target, force)
        where = Layout(target).classification_dir
    else:
        _, run = run_targets(config, overrides, run_dir, ["classify"], force)
        s = json.loads((run.classification_dir / SUMMARY).read_text(encoding="utf-8"))
        where = run.classification_dir
    h = s["headline"][s["best_model"]]
    typer.echo(f"classify ({s['evaluation']}): best model {s['best_model']} - accuracy {h['accuracy']:.3f}, "
               f"macro F1 {h['f1_macro']:.3f}, macro AUC {h['auc_macro']:.3f} -> {where}")


@app.command()
def predict(
    model: Path = typer.Option(..., "--model", help="A run directory or its classification/ folder."),
    features_table: Path = typer.Option(..., "--features", help="Feature table (CSV/Parquet) to predict."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output CSV/Parquet (default: predictions.csv next to "
                                       "the table)."),
    trust_model: bool = typer.Option(False, "--trust-model", help="Load a model that this installation did not "
                                     "sign (copied from elsewhere): a pickle runs code, so only for sources you "
                                     "trust."),
    name: Optional[str] = typer.Option(None, "--name", help="One of the saved models (rf, xgboost, svm, lr) "
                                       "instead of the best."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file that cervirad did not write."),
) -> None:
    """Per-patient class and probabilities from a saved classifier."""
    from .classification import predict_table

    target = out or features_table.with_name(features_table.name.split(".")[0] + "_predictions.csv")
    _check_predict_out(target, features_table, model, force)
    res = predict_table(model, features_table, target, trust_model, name)
    none = int(res["predicted"].isna().sum())
    typer.echo(f"predict: {len(res)} patient(s), classes {res['predicted'].value_counts().to_dict()}"
               f"{f', {none} without prediction' if none else ''} -> {target}")


@app.command()
def evaluate(
    run: Path = typer.Option(..., "--run", help="A finished run folder (run-all) whose models are applied unchanged."),
    out: Path = typer.Option(..., "--out", help="Folder for the external validation (a run folder of its own)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with the external cohort's data "
                                          "section (manifest, clinical, sequences, ...)."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="External manifest CSV (instead of --config)."),
    clinical: Optional[Path] = typer.Option(None, "--clinical", help="External clinical CSV (labels: optional)."),
    force: bool = ForceOpt,
    harmonize: bool = typer.Option(False, "--harmonize", help="A model trained with ComBat (classification."
                                   "harmonize: combat): estimate an unseen scanner's ComBat parameters from the "
                                   "external patients' own features (transductive, no labels; marked in the report)."),
) -> None:
    """External validation: apply a finished run, unchanged, to a new cohort (segment, features, predict, score)."""
    from .config import read_yaml_file
    from .pipeline import evaluate_external, external_config

    if (config is None) == (manifest is None):
        raise CerviradError("evaluate needs the external cohort: --config COHORT.yaml or --manifest FILE "
                            "[--clinical FILE], not both.")
    if config is not None:
        if not config.is_file():
            raise CerviradError(f"Config file '{config}' not found; pass the external cohort's YAML.")
        doc = read_yaml_file(config) or {}
        if not isinstance(doc, dict):
            raise CerviradError(f"Config file '{config}' must hold a mapping (the external cohort's data section), "
                                f"got {type(doc).__name__}.")
        data = doc.get("data", doc)
        if not isinstance(data, dict):
            raise CerviradError(f"Config file '{config}': 'data' must be a mapping (manifest, clinical, sequences, "
                                f"...), got {type(data).__name__}.")
    else:
        data = {"manifest": str(manifest), "clinical": str(clinical) if clinical else None}
    cfg = external_config(run, data, out.name)
    s = evaluate_external(cfg, run, out, force, harmonize)
    parts = [f"{m} masks: accuracy {v['accuracy']:.3f}, macro AUC "
             + (f"{v['auc_macro']:.3f}" if v.get("auc_macro") is not None else "undefined (see the report)")
             for m, v in s["sources"].items() if v.get("accuracy") is not None]
    typer.echo(f"evaluate: {s['model']} from {run} -> {out}; " + ("; ".join(parts) or "no labels, predictions only")
               + (f"; {len(s['shift_warnings'])} shift warning(s)" if s.get("shift_warnings") else "")
               + f"; report {out / 'external_report.html'}")


@app.command("run-all")
def run_all(
    config: Optional[Path] = ConfigOpt,
    run_dir: Optional[Path] = RunDirOpt,
    start: Optional[str] = typer.Option(None, "--from", help="Redo this stage and every later one."),
    force: bool = typer.Option(False, "--force", help="Redo every stage (and replace another run's artifacts)."),
    overrides: List[str] = SetOpt,
) -> None:
    """validate -> preprocess -> plan -> train-seg (+ test masks) -> features (manual, predicted) -> classify -> report."""
    from .pipeline import run_stages

    cfg, run = load_run(config, overrides, run_dir)
    times = run_stages(cfg, run, force=force, start=start)
    ran = ", ".join(f"{k} {v:.0f}s" for k, v in times.items()) or "nothing to redo"
    typer.echo(f"run-all: {ran}; report -> {run.report}")


@app.command()
def report(
    config: Optional[Path] = ConfigOpt,
    run_dir: Optional[Path] = RunDirOpt,
    force: bool = ForceOpt,
    overrides: List[str] = SetOpt,
) -> None:
    """(Re)build the self-contained report.html of a run from its artifacts."""
    _, run = run_targets(config, overrides, run_dir, ["report"], force)
    typer.echo(f"report -> {run.report}")


def main() -> None:
    """Console entry point: one line and exit 2 for user errors, exit 1 for internal errors. Under
    torchrun (``WORLD_SIZE`` > 1) rank 0 runs the command and the other ranks train alongside it
    (:mod:`cervirad.segmentation.distributed`)."""
    if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1"):
        from .segmentation.distributed import run_ranks

        _setup_logging()
        try:
            sys.exit(run_ranks(_main_one))
        except CerviradError as e:  # torchrun's environment incomplete or not understood
            typer.echo(f"cervirad: error: {e}", err=True)
            sys.exit(e.exit_code)
    _main_one()


def _main_one() -> None:
    """Run the command: one line for every error the user can fix (exit 2, usage errors included), "cervirad:
    interrupted" on Ctrl-C (exit 130) and on SIGTERM (exit 143; the running stage is marked interrupted either
    way), a full disk or read-only file system reported as such (exit 2), anything else exit 1."""
    signal_name, restore = _terminate_like_ctrl_c()
    try:
        rc = app(standalone_mode=False)
        if rc == 130:  # typer turns KeyboardInterrupt into exit code 130 (no message)
            raise KeyboardInterrupt
        sys.exit(rc or 0)
    except CerviradError as e:
        msg = str(e).replace("\n", " ")
        typer.echo(f"cervirad: error: {msg}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        _interrupted(signal_name())
    except Exception as e:
        if type(e).__name__ == "Abort":  # the click typer carries: Ctrl-D / Ctrl-C at a prompt
            _interrupted(signal_name())
        if hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int):  # click usage errors
            _usage_error(e)
        from .files import storage_error  # a full disk or read-only file system is the user's to fix

        err = storage_error(e)
        if err is None:
            _internal(e)
        typer.echo(f"cervirad: error: {err}", err=True)
        sys.exit(2)
    finally:
        restore()


def _interrupted(name: str | None) -> None:
    typer.echo(f"cervirad: interrupted{f' ({name})' if name else ''}", err=True)
    sys.exit(143 if name == "SIGTERM" else 130)


def _usage_error(e) -> None:
    """A command-line usage error (unknown option, bad type, missing value) in one line; a bare ``cervirad`` or
    ``cervirad CMD`` shows the help as before."""
    if type(e).__name__ == "NoArgsIsHelpError":
        e.show()
        sys.exit(e.exit_code)
    ctx = getattr(e, "ctx", None)
    where = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
    typer.echo(f"cervirad: error: {e.format_message().replace(chr(10), ' ').rstrip('. ')}{where}", err=True)
    sys.exit(e.exit_code)


def _internal(e: Exception) -> None:
    log.debug("internal error", exc_info=True)
    typer.echo(f"cervirad: internal error: {type(e).__name__}: {e} (rerun with -v for the traceback; "
               "please report it)", err=True)
    sys.exit(1)


def _terminate_like_ctrl_c():
    """SIGTERM raises KeyboardInterrupt (the running stage is marked interrupted, workers are shut down) and is
    remembered; returns (the name of the signal received, None for Ctrl-C; a function restoring the handler)."""
    import signal
    import threading

    got: list[str] = []

    def on_term(signum, frame):
        got.append("SIGTERM")
        raise KeyboardInterrupt

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_term)

    def restore() -> None:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

    return (lambda: got[0] if got else None), restore


if __name__ == "__main__":
    main()
