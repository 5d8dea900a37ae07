"""The presets shipped inside the package (``cervirad/configs/``), found from any directory.

:func:`resolve` turns what a user typed after ``--config`` (or into ``features.radiomics_params``)
into a file: an existing path wins (absolute, or relative to the working directory); otherwise
the name is looked up among the packaged presets, so ``demo``, ``demo.yaml`` and
``configs/demo.yaml`` all work from an installed wheel, outside the repository.
"""
from __future__ import annotations

import atexit
import contextlib
from importlib import resources
from pathlib import Path, PurePosixPath

from .errors import ConfigError

# kind -> (sub-folder of configs/ the name is looked up in, what the user is asked to pass)
KINDS = {
    "config": ("", "Config file"),
    "radiomics": ("radiomics", "Radiomics parameter file"),
}
_EXTRACTED = contextlib.ExitStack()  # only used when the package is not a plain directory (e.g. zipped)
atexit.register(_EXTRACTED.close)


def root():
    """The packaged ``configs`` folder (an importlib Traversable; a Path for any normal install)."""
    return resources.files("cervirad") / "configs"


def available(kind: str = "config") -> list[str]:
    """Names of the packaged presets of ``kind``, relative to ``configs/`` (e.g. ``radiomics/paper.yaml``)."""
    sub, _ = _kind(kind)
    out: list[str] = []

    def walk(node, prefix: PurePosixPath) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, prefix / child.name)
            elif child.name.endswith((".yaml", ".yml")):
                out.append(str(prefix / child.name))

    base = root().joinpath(*PurePosixPath(sub).parts) if sub else root()
    if base.is_dir():
        if sub:
            walk(base, PurePosixPath(sub))
        else:  # pipeline configs: the top level only (radiomics/ holds parameter files)
            out += [c.name for c in base.iterdir() if c.is_file() and c.name.endswith((".yaml", ".yml"))]
    return sorted(out)


def resolve(path_or_name: str | Path, kind: str = "config") -> Path:
    """An existing file path, else the packaged preset of that name; :class:`ConfigError` otherwise."""
    p = Path(path_or_name).expanduser()
    if p.is_file():
        return p
    return packaged(path_or_name, kind)


def packaged(name: str | Path, kind: str = "config") -> Path:
    """The packaged preset ``name`` (files in the working directory are not considered)."""
    sub, what = _kind(kind)
    for rel in _candidates(str(name), sub):
        node = root().joinpath(*rel.parts)
        if node.is_file():
            return _as_path(node)
    names = ", ".join(available(kind)) or "none"
    raise ConfigError(f"{what} '{name}' not found: no such file and no packaged preset of that name; "
                      f"pass an existing YAML file or one of the presets: {names}.")


def _kind(kind: str) -> tuple[str, str]:
    if kind not in KINDS:
        raise ValueError(f"unknown preset kind {kind!r}; expected one of {sorted(KINDS)}")
    return KINDS[kind]


def _candidates(name: str, sub: str) -> list[PurePosixPath]:
    """Relative paths inside ``configs/`` that ``name`` may denote (never leaving that folder)."""
    rel = PurePosixPath(name.replace("\\", "/"))
    parts = [x for x in rel.parts if x not in ("", ".")]
    if not parts or rel.is_absolute() or ".." in parts:
        return []
    if parts[0] == "configs":  # a repo-relative path such as configs/radiomics/paper.yaml
        parts = parts[1:]
    if not parts:
        return []
    if sub and parts[0] != sub:
        parts = [sub, *parts]
    rel = PurePosixPath(*parts)
    out = [rel]
    if rel.suffix not in (".yaml", ".yml"):
        out += [rel.with_name(rel.name + ".yaml"), rel.with_name(rel.name + ".yml")]
    return out


def _as_path(node) -> Path:
    if isinstance(node, Path):
        return node
    return _EXTRACTED.enter_context(resources.as_file(node))
