from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from anodiff.config import build, load_yaml, merge, parse_overrides, to_plain
from anodiff.diffusion.training import TrainConfig
from anodiff.errors import AnodiffError


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    steps: int = 10


@dataclass(frozen=True)
class Outer:
    solver: Literal["ddim", "dpmpp2m"] = "ddim"
    levels: tuple[int, ...] = (100, 200)
    scale: float | None = None
    train: Inner = field(default_factory=Inner)
    name: str = "x"
    flag: bool = False


def test_yaml_and_overrides_build_a_validated_dataclass(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("solver: dpmpp2m\nlevels: [250, 500]\ntrain:\n  lr: 0.01\n")
    values = merge(load_yaml(path), parse_overrides(["train.steps=50", "scale=3", "flag=true"]))
    cfg = build(Outer, values)
    assert cfg == Outer("dpmpp2m", (250, 500), 3.0, Inner(0.01, 50), "x", True)
    assert isinstance(cfg.scale, float)  # an int in YAML is accepted where a float is due
    assert to_plain(cfg)["train"] == {"lr": 0.01, "steps": 50}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"solvr": "ddim"}, r"solvr: unknown setting"),
        ({"train": {"learning_rate": 1}}, r"train\.learning_rate: unknown setting"),
        ({"train": {"lr": "fast"}}, r"train\.lr: expected a number, got 'fast'"),
        ({"train": {"steps": 2.5}}, r"train\.steps: expected an integer"),
        ({"solver": "euler"}, r"solver: 'euler' is not one of"),
        ({"levels": 5}, r"levels: expected a list"),
        ({"flag": "yes"}, r"flag: expected true or false"),
    ],
)
def test_bad_configs_name_the_key(values: dict, message: str) -> None:
    with pytest.raises(AnodiffError, match=message):
        build(Outer, values)


def test_override_syntax_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(AnodiffError, match="expected KEY=VALUE"):
        parse_overrides(["train.lr"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(AnodiffError, match="bad.yaml: not valid YAML"):
        load_yaml(bad)
    with pytest.raises(AnodiffError, match="config file not found"):
        load_yaml(tmp_path / "missing.yaml")


def test_train_config_builds_over_a_preset() -> None:
    preset = TrainConfig(steps=400, batch_size=16)
    cfg = build(TrainConfig, {"lr": 5e-4}, "train", base=preset)
    assert cfg.steps == 400 and cfg.lr == 5e-4
    with pytest.raises(AnodiffError, match="train.ema_decay: expected a number"):
        build(TrainConfig, {"ema_decay": "slow"}, "train", base=preset)


def test_nested_overrides_update_the_preset_instead_of_resetting_it() -> None:
    preset = Outer(train=Inner(lr=0.5, steps=7))
    cfg = build(Outer, {"train": {"steps": 50}}, base=preset)
    assert cfg.train == Inner(lr=0.5, steps=50)
