"""`make demo` runs exactly the command the README documents, with a config that loads."""
import re
from pathlib import Path

from cervirad.config import load_config

REPO = Path(__file__).resolve().parents[2]


def _make_var(text: str, name: str) -> str:
    m = re.search(rf"^{name}\s*\?=\s*(\S+)", text, re.M)
    assert m, f"Makefile has no {name}"
    return m.group(1)


def test_make_demo_config_is_the_documented_one():
    make = (REPO / "Makefile").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    config, run_dir = _make_var(make, "CONFIG"), _make_var(make, "RUN_DIR")
    demo_recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", make, re.M).group(1)
    assert "cervirad run-all --config $(CONFIG) --run-dir $(RUN_DIR)" in demo_recipe
    assert f"cervirad run-all --config {config} --run-dir {run_dir}" in readme
    cfg = load_config(REPO / config)
    assert cfg.data.source == "demo"


def test_readme_gives_exactly_two_fresh_machine_commands():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## On a fresh machine\s*```bash\n(.*?)```", readme, re.S).group(1)
    assert [ln.strip() for ln in block.strip().splitlines()] == ["make demo", "make test"]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci
