"""Config loading: YAML (read safely, within size limits), packaged presets, ``--set`` overrides, and
the checked :class:`~.schema.Config` built from them (:func:`load_config`, :func:`from_dict`,
:func:`with_overrides`).

Command-line overrides use dotted paths: ``--set segmentation.epochs=2``; the value is parsed as YAML
(``--set classification.models=[rf,lr]``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .. import presets
from ..errors import ConfigError
from .checks import build, check_values
from .schema import Config

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


def from_dict(data: dict | None) -> Config:
    """A checked :class:`Config` from a mapping of sections (missing keys keep their defaults)."""
    cfg = build(Config, data or {})
    check_values(cfg)
    return cfg


def with_overrides(cfg: Config, overrides: list[str]) -> Config:
    """``cfg`` with ``--set``-style overrides applied (``["segmentation.epochs=2"]``), checked again."""
    d = cfg.to_dict()
    for item in overrides:
        apply_override(d, item)
    return from_dict(d)
