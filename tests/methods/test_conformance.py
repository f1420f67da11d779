"""The contract every registered method keeps, checked for each one at its quick preset.

A new method passes these without a test of its own for any of them: it fits on the labelled
toy problem of ``weak_toys`` (each regime takes what it may use; the fit is shared with the
method tests through ``fitted_on_toys``), ``localize`` returns a valid
:class:`~anodiff.AnomalyResult`, the NFE it reports equals the network evaluations counted
by forward hooks, save -> load gives bit-identical results, bad input is one
:class:`~anodiff.AnodiffError`, ``.to(device)`` moves every tensor, the same seed gives the
same detector and maps, and neither fitting nor localising touches torch's global random
state.
"""

import copy
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from weak_toys import SIZE, toy_slices, toy_training_items

import anodiff
from anodiff.diffusion.training import TrainConfig
from anodiff.scoring.foreground import foreground

METHODS = [info.name for info in anodiff.methods()]
CHANNELS = 2


def unseen_images() -> torch.Tensor:
    """4 healthy and 4 lesioned slices no method trained on."""
    return torch.cat([toy_slices(4, False, seed=2)[0], toy_slices(4, True, seed=3)[0]])


def shortened(config, steps: int):
    """``config`` with every training cut to ``steps`` steps (for repeated fits)."""
    changes = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, TrainConfig):
            changes[field.name] = dataclasses.replace(
                value, steps=steps, checkpoint_every=steps, validate_every=None)
        elif dataclasses.is_dataclass(value):
            changes[field.name] = shortened(value, steps)
    return dataclasses.replace(config, **changes)


def fit_shortened(name: str, run_dir: Path, steps: int) -> anodiff.Detector:
    """``name`` at its quick preset with every training cut to ``steps`` steps."""
    det = anodiff.create(name, preset="quick")
    det = type(det)(shortened(det.config, steps))
    det.run_dir = run_dir
    return det.fit(toy_training_items())


@pytest.fixture(scope="module", params=METHODS)
def fitted(request: pytest.FixtureRequest, fitted_on_toys) -> Iterator[anodiff.Detector]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield fitted_on_toys(request.param)
    torch.set_num_threads(threads)


def test_localize_returns_a_valid_result(fitted: anodiff.Detector) -> None:
    images = unseen_images()
    result = fitted.localize(images)
    assert isinstance(result, anodiff.AnomalyResult)
    fg = foreground(images)
    n = len(images)
    assert result.anomaly_map.shape == (n, SIZE, SIZE) and result.score.shape == (n,)
    assert torch.isfinite(result.anomaly_map).all() and torch.isfinite(result.score).all()
    assert (result.anomaly_map[~fg] == 0).all()
    assert result.mask is not None and not (result.mask & ~fg).any()
    if result.pseudo_healthy is not None:
        assert result.pseudo_healthy.shape == images.shape
        assert 0 <= float(result.pseudo_healthy.min()) <= float(result.pseudo_healthy.max()) <= 1
    if result.uncertainty is not None:
        assert (result.uncertainty[~fg] == 0).all() and (result.uncertainty >= 0).all()


def test_reported_nfe_is_what_the_networks_evaluated(fitted: anodiff.Detector) -> None:
    """Each forward pass of a counted network costs (its input's pixels / an image's) per
    input row; a patch network's pass over a b x b patch is a (b/H)^2 share."""
    images = unseen_images()
    spent = []

    def count(_module: nn.Module, args: tuple, _output: object) -> None:
        x = args[0]
        spent.append(x.shape[0] * x.shape[-2] * x.shape[-1] / (SIZE * SIZE))

    networks = [getattr(fitted, name) for name in fitted.counted]
    modules = [m for net in networks for m in (net if isinstance(net, nn.ModuleList) else [net])]
    hooks = [m.register_forward_hook(count) for m in modules]
    try:
        result = fitted.localize(images)
    finally:
        for hook in hooks:
            hook.remove()
    assert result.nfe == pytest.approx(sum(spent) / len(images))
    assert (result.nfe > 0) == bool(fitted.counted)


def test_save_then_load_gives_identical_results(fitted: anodiff.Detector, tmp_path: Path
                                                ) -> None:
    images = unseen_images()
    loaded = anodiff.load(fitted.save(tmp_path / "model"))
    assert type(loaded) is type(fitted) and loaded.config == fitted.config
    ours, theirs = fitted.localize(images), loaded.localize(images)
    for field in ("anomaly_map", "score", "mask", "pseudo_healthy", "uncertainty"):
        a, b = getattr(ours, field), getattr(theirs, field)
        assert (a is None and b is None) or torch.equal(a, b), field


@pytest.mark.parametrize(("change", "message"), [
    (lambda x: x[:, :1], "channel"),
    (lambda x: x[:, :, :-2], "slices"),
    (lambda x: x[None], "expected images"),
    (lambda x: torch.where(x > 0.5, torch.nan, x), "NaN"),
    (lambda x: x * 255, r"\[0, 1\]"),
])
def test_bad_input_is_one_named_error(fitted: anodiff.Detector, change, message: str) -> None:
    with pytest.raises(anodiff.AnodiffError, match=message):
        fitted.localize(change(unseen_images()))


def test_one_slice_needs_no_batch_axis(fitted: anodiff.Detector) -> None:
    """(C, H, W) is one slice, and a numpy array is as good as a tensor."""
    images = unseen_images()
    one = fitted.localize(images[0].numpy())
    assert torch.equal(one.anomaly_map, fitted.localize(images[:1]).anomaly_map)


def test_to_moves_every_tensor(fitted: anodiff.Detector) -> None:
    moved = copy.deepcopy(fitted).to("meta")
    assert moved.device == torch.device("meta")
    assert all(t.device.type == "meta" for t in moved.state_dict().values())
    assert all(t.device.type == "meta" for t in moved.buffers())
    ours = [m for m in moved.modules() if type(m).__module__.startswith("anodiff")]
    stray = [f"{type(m).__name__}.{k}" for m in ours
             for k, v in vars(m).items() if isinstance(v, torch.Tensor)]
    assert not stray, f"tensors outside the module tree: {stray}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_a_gpu_gives_the_cpu_results(fitted: anodiff.Detector) -> None:
    images = unseen_images()
    on_gpu = copy.deepcopy(fitted).to("cuda")
    ours, theirs = fitted.localize(images), on_gpu.localize(images)
    assert torch.allclose(ours.anomaly_map, theirs.anomaly_map, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("name", METHODS)
def test_a_fast_preset_is_the_cpu_model_at_other_test_time_settings(name: str) -> None:
    """Every method has a ``fast`` preset a finished cpu run reaches by export (issue 23);
    where the cpu preset is already within the budget, or no faster setting kept its figures,
    it changes nothing."""
    changes = anodiff.methods.preset_changes(name, "fast")
    assert not any(dataclasses.is_dataclass(v) for v in changes.values())
    cpu = anodiff.methods.method_class(name).presets["cpu"]
    assert dataclasses.replace(cpu, **changes) == anodiff.methods.method_class(name).presets["fast"]


@pytest.mark.parametrize("name", METHODS)
def test_the_same_seed_gives_the_same_detector(name: str, tmp_path: Path) -> None:
    torch.manual_seed(123)
    caller_state = torch.get_rng_state()
    first = fit_shortened(name, tmp_path / "a", steps=2)
    images = unseen_images()
    first_result = first.localize(images)
    assert torch.equal(torch.get_rng_state(), caller_state)  # fit and localize leave it alone
    second = fit_shortened(name, tmp_path / "b", steps=2)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert torch.equal(first_result.anomaly_map, second.localize(images).anomaly_map)


def test_the_class_flags_say_what_the_step_returns(fitted: anodiff.Detector) -> None:
    result = fitted.localize(unseen_images()[:2])
    assert (result.pseudo_healthy is not None) == type(fitted).reconstructs
    if type(fitted).level_setting is not None:
        assert isinstance(getattr(fitted.config, type(fitted).level_setting), int)


def test_several_draws_are_combined_by_the_shared_pipeline(fitted: anodiff.Detector) -> None:
    cls, images = type(fitted), unseen_images()[:3]
    if not cls.aggregatable:
        with pytest.raises(anodiff.AnodiffError, match="samples and levels"):
            fitted.retuned(keep_state=True, samples=2)
        return
    one = fitted.localize(images)
    settings = {"samples": 2 * fitted.config.samples,
                "aggregate": "zscore" if cls.reconstructs else "mean"}
    two = fitted.retuned(keep_state=True, **settings).localize(images)
    assert two.nfe == pytest.approx(2 * one.nfe)
    assert two.anomaly_map.shape == one.anomaly_map.shape
    assert torch.isfinite(two.anomaly_map).all() and two.uncertainty is not None
    if cls.level_setting is not None:
        level = getattr(fitted.config, cls.level_setting)
        levels = fitted.retuned(keep_state=True, levels=(level, max(1, level // 2)))
        assert torch.isfinite(levels.localize(images).anomaly_map).all()


@pytest.mark.parametrize("name", METHODS)
def test_one_input_channel_works(name: str, tmp_path: Path) -> None:
    """A single sequence (T2 only, as most public healthy sets have) fits and localises."""
    det = anodiff.create(name, preset="quick")
    det = type(det)(shortened(det.config, 2))
    det.run_dir = tmp_path
    items = [{**item, "image": item["image"][:1]} for item in toy_training_items()]
    det.fit(items)
    result = det.localize(unseen_images()[:, :1])
    assert det.input_shape == (1, SIZE, SIZE)
    assert torch.isfinite(result.anomaly_map).all() and result.anomaly_map.shape == (8, SIZE, SIZE)
    with pytest.raises(anodiff.AnodiffError, match="channel"):
        det.localize(unseen_images())
