"""Commands that bring a cohort in: ``demo-data`` (the synthetic cohort), ``validate``, ``index-dicom``."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import CerviradError
from ..files import read_json
from .common import ConfigOpt, ForceOpt, RunDirOpt, SetOpt, app, check_writable, load_run


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
    from ..demo import SITES, write_demo_cohort
    from ..errors import InputError

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

def _check_demo_out(out: Path, force: bool) -> None:
    """demo-data writes a folder, never over a file nor over a cohort it did not write (without --force)."""
    from ..demo import CLINICAL, MANIFEST, STAMP
    from ..errors import InputError
    from ..rundir import refuse_inside_run

    if out.exists() and not out.is_dir():
        raise InputError(f"demo-data --out '{out}' is a file; give a folder (it is created if missing).")
    refuse_inside_run(out, "demo-data --out")
    check_writable(out / MANIFEST, "demo-data --out")
    theirs = [n for n in (MANIFEST, CLINICAL) if (out / n).exists()]
    if not theirs or force:
        return
    try:
        stamp = read_json(out / STAMP)
        ours = isinstance(stamp, dict) and {"patients", "seed", "version"} <= set(stamp)
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise InputError(f"demo-data --out '{out}' already holds {' and '.join(theirs)} not written by demo-data "
                         "(no demo.json); choose an empty folder, or pass --force to replace them.")

def _manifest_overrides(manifest: Path, clinical: Optional[Path]) -> List[str]:
    """Config overrides for a bare ``--manifest``: sequences are the manifest's image columns."""
    from ..config.schema import DataConfig
    from ..io import read_header

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
    from ..pipeline import run_stages

    if config is None and manifest is None:
        raise CerviradError("validate needs --config FILE or --manifest FILE; pass one of them.")
    if manifest is not None:
        overrides = [*overrides, *_manifest_overrides(manifest, clinical)]
    cfg, run = load_run(config, overrides, run_dir)
    run_stages(cfg, run, ["validate"], force=force)
    fp = read_json(run.fingerprint)
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

    from ..dicom.index import index_tree, parse_rules
    from ..io import write_table

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
