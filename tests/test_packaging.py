"""The packaging contract: lower bounds that CI tests, and extras that say what they bring."""

import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.version import Version

from anodiff.errors import AnodiffError
from anodiff.extras import EXTRAS, installed, require

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = [r for extra in project["optional-dependencies"].values() for r in extra]
    return [r for r in project["dependencies"] + optional if not r.startswith("anodiff[")]


def test_every_lower_bound_is_in_the_floors_file() -> None:
    """Each ``name>=X`` of pyproject.toml is ``name==X`` in constraints/floors.txt (which CI's
    floors job installs), torch excepted, and the file names nothing else."""
    floors = {}
    for line in (ROOT / "constraints" / "floors.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            floors[name.lower()] = version.strip()
    bounds = {}
    for requirement in _requirements():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)(,<[0-9.]+)?", requirement)
        assert match, f"{requirement}: every dependency needs a lower bound"
        bounds[match.group(1).lower()] = match.group(2)
    assert bounds.pop("torch") == "2.4"
    assert set(floors) == set(bounds)
    for name, bound in bounds.items():
        assert Version(floors[name]) == Version(bound), f"{name}: floor {floors[name]}, " \
            f"pyproject.toml says >={bound}"


def test_an_extra_missing_is_named_with_its_install_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "maxflow", None)  # import maxflow now raises ImportError
    assert not installed("graphcut") and installed("report")
    with pytest.raises(AnodiffError, match=r"the graph cut needs maxflow, which is not "
                                           r"installed: pip install 'anodiff\[graphcut\]'"):
        require("maxflow", "graphcut", "the graph cut")
    assert set(EXTRAS) == {"synth", "graphcut", "report", "serve"}


def test_serve_without_its_extra_names_the_install(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path) -> None:
    from typer.testing import CliRunner

    from anodiff.cli import app

    monkeypatch.setitem(sys.modules, "starlette", None)
    result = CliRunner().invoke(app, ["serve", str(tmp_path)])
    assert isinstance(result.exception, AnodiffError)
    assert "pip install 'anodiff[serve]'" in str(result.exception)


def test_invdetect_refuses_a_graph_cut_without_pymaxflow_before_training(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from anodiff.methods import create

    monkeypatch.setitem(sys.modules, "maxflow", None)
    with pytest.raises(AnodiffError, match=r"anodiff\[graphcut\]"):
        create("invdetect", preset="quick")
    assert create("invdetect", preset="quick", refine=False).name == "invdetect"
