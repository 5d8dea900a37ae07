"""Feature and classifier commands: ``extract-features``, ``classify`` (a run's features or any table) and
``predict``."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .. import presets
from ..errors import CerviradError
from ..files import read_json
from .common import ConfigOpt, ForceOpt, RunDirOpt, SetOpt, app, check_writable, load, load_run

TABLE_CONFIG = presets.packaged("table.yaml")  # cervirad/configs/table.yaml, inside the installed package


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
    from .. import features
    from ..pipeline import run_stages

    cfg = load(config, overrides)
    masks = masks or cfg.features.masks
    if masks not in ("manual", "predicted"):
        raise CerviradError(f"Unknown mask source '{masks}'; use --masks manual or --masks predicted.")
    cfg, run = load_run(config, overrides, run_dir)
    run_stages(cfg, run, ["features" if masks == "manual" else "features-predicted"], force=force)
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
    from ..pipeline import classify_table, run_stages
    from ..layout import SUMMARY, Layout

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
        cfg, run = load_run(config, overrides, run_dir)
        run_stages(cfg, run, ["classify"], force=force)
        s = read_json(run.classification_dir / SUMMARY)
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
    from ..classification import predict_table

    target = out or features_table.with_name(features_table.name.split(".")[0] + "_predictions.csv")
    _check_predict_out(target, features_table, model, force)
    res = predict_table(model, features_table, target, trust_model, name)
    none = int(res["predicted"].isna().sum())
    typer.echo(f"predict: {len(res)} patient(s), classes {res['predicted'].value_counts().to_dict()}"
               f"{f', {none} without prediction' if none else ''} -> {target}")

def _check_predict_out(target: Path, features: Path, model: Path, force: bool) -> None:
    """predict writes a file: never a folder, never an input, never a file it did not write (without --force),
    never inside a run folder's own entries (the next run would delete it)."""
    from ..errors import InputError
    from ..rundir import refuse_inside_run

    refuse_inside_run(target, "predict --out")
    if target.is_dir():
        raise InputError(f"predict --out '{target}' is a folder; give a file name such as "
                         f"'{target / 'predictions.csv'}'.")
    for flag, src in (("--features", features), ("--model", model)):
        if target.exists() and src.exists() and target.resolve() == src.resolve():
            raise InputError(f"predict --out '{target}' is the input {flag} file; choose another output file "
                             "(inputs are never overwritten).")
    check_writable(target, "predict --out")
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
            from ..io import read_header

            cols = read_header(path)
    except Exception:  # unreadable: not ours
        return False
    return "predicted" in cols and any(c.startswith("prob_") for c in cols)
