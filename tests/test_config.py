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


@pytest.mark.parametrize(("method", "values", "message"), [
    ("diffano", {"diffusion": {"num_steps": 0}}, r"method.diffusion: num_steps"),
    ("diffano", {"diffusion": {"train": {"lr": float("nan")}}}, r"method.diffusion.train: .*lr"),
    ("diffano", {"classifier": {"net": "huge"}}, r"method.classifier.net: .huge. is not one"),
    ("anoddpm", {"diffusion": {"max_level": 5000}}, r"max_level must be in \[1, 1000\]"),
    ("anoddpm", {"score_percentile": float("nan")}, r"method: score_percentile"),
    ("threshold", {"fpr": -0.5}, r"method: fpr must be in \(0, 1\)"),
    ("imgcond", {"ensemble": {"folds": [11]}}, r"method.ensemble: folds"),
    ("invdetect", {"image_batch": 0}, r"method: batch_size must be >= 1"),  # the old key
])
def test_every_method_config_refuses_impossible_values(method: str, values: dict,
                                                        message: str) -> None:
    """One validation path (each dataclass's __post_init__), at the config boundary."""
    from anodiff.workflows.run import resolve_settings

    with pytest.raises(AnodiffError, match=message):
        resolve_settings(method, "cpu", {"method": values})


@pytest.mark.parametrize(("values", "message"), [
    ({"size": 100000}, r"data: size must be in \[8, 1024\]"),
    ({"keep_fraction": 2.0}, "keep_fraction"),
    ({"sequences": ["flair", "flair"]}, "distinct"),
])
def test_data_settings_refuse_impossible_values(values: dict, message: str) -> None:
    from anodiff.workflows.run import resolve_settings

    with pytest.raises(AnodiffError, match=message):
        resolve_settings("threshold", "cpu", {"data": values})


def test_settings_of_an_earlier_version_upgrade() -> None:
    """Format-1 run folders hold train.device and invdetect's image_batch: still accepted."""
    assert build(TrainConfig, {"device": "cpu", "steps": 5}).steps == 5
    from anodiff.methods.invdetect import InvDetectConfig

    assert build(InvDetectConfig, {"image_batch": 4}).batch_size == 4
