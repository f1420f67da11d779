"""A method installed by another package, through the ``anodiff.methods`` entry-point group,
is listed, trained and used for detection like a built-in one."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from anodiff.data.synth import SynthConfig, build

PLUGIN = '''
"""A third-party method in one file: the local contrast |x - mean of its 3x3 neighbourhood|."""
from dataclasses import dataclass

import torch.nn.functional as F

import anodiff
from anodiff.methods.training_data import training_images


@dataclass(frozen=True)
class ContrastConfig(anodiff.LocalizationConfig):
    window: int = 3


@anodiff.register("toycontrast")
class Contrast(anodiff.Detector[ContrastConfig]):
    supervision = "unsupervised"
    description = "local contrast (a plug-in test double)"
    presets = {"quick": ContrastConfig(), "cpu": ContrastConfig(window=5)}

    def fit_parts(self, data):
        images, _ = training_images(data, self.supervision)
        self.prepare(tuple(images.shape[1:]))

    def step(self, x, generator):
        blurred = F.avg_pool2d(x, self.config.window, 1, self.config.window // 2,
                               count_include_pad=False)
        return anodiff.RawResult(anomaly_map=(x - blurred).abs().sum(1), nfe=0)
'''


DRIVER = """
import sys
from typer.testing import CliRunner
from anodiff.cli import app
for command in sys.argv[1:]:
    result = CliRunner().invoke(app, command.split("|"))
    print(f"--- exit {result.exit_code}: {command}")
    print(result.output)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        print(repr(result.exception))
"""


def run(site: Path, *commands: list) -> subprocess.CompletedProcess:
    """The commands in one fresh Python process with ``site`` on its path, as an installed
    package would be."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-c", DRIVER,
                           *("|".join(map(str, command)) for command in commands)],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder on the path with an installed distribution that declares the entry point."""
    root = tmp_path_factory.mktemp("site")
    (root / "toy_plugin").mkdir()
    (root / "toy_plugin" / "__init__.py").write_text(PLUGIN)
    for name, target in (("toy_plugin", "toy_plugin"), ("broken", "no_such_module")):
        info = root / f"{name}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[anodiff.methods]\n{name} = {target}\n")
    return root


def test_a_plugin_method_is_listed_trained_and_detects(site: Path, tmp_path: Path) -> None:
    build(tmp_path / "synth", SynthConfig(size=32, cases=4, tracks=("tumour",)), workers=1)
    data = tmp_path / "synth" / "tumour"
    case = next(p for p in sorted(data.iterdir()) if p.is_dir())
    done = run(site, ["methods"],
               ["train", "toycontrast", "--data", data, "--out", tmp_path / "run", "--preset",
                "quick", "--set", "data.size=32"],
               ["detect", tmp_path / "run", case, "--out", tmp_path / "maps"])
    assert done.returncode == 0 and done.stdout.count("--- exit 0") == 3, done.stdout
    assert "toycontrast" in done.stdout and "diffano" in done.stdout
    # a broken plug-in beside it breaks nothing, but is named
    assert "broken" in done.stdout and "failed to load" in done.stdout
    assert (tmp_path / "maps" / f"{case.name}_anomaly_map.nii.gz").is_file()
