"""Latent diffusion on toy brains: the autoencoder, the latent scale, the latent DDPM, and a
checkpoint without its autoencoder.

One quick model (16² discs, a one-halving autoencoder, 8² x 2 latents) is trained once per
module. The conformance suite covers fitting, saving, NFE counting and bad input for ``ldm``.
"""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_anoddpm import fit_on_toy_brains, toy_brains

import anodiff
from anodiff.errors import AnodiffError
from anodiff.methods.ldm import LDM
from anodiff.scoring.foreground import foreground

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> LDM:
    return fit_on_toy_brains("ldm", tmp_path_factory.mktemp("ldm"))


@pytest.mark.slow  # trains a model; the conformance suite covers the contract by default
def test_latents_are_scaled_to_unit_spread(trained: LDM) -> None:
    images = toy_brains(64, False, seed=0)[0]
    latents = trained.encode(images)
    assert latents.shape == (64, 2, 8, 8)
    assert abs(float(latents.std()) - 1) < 1e-4  # the scale was fitted on these slices
    assert (trained.run_dir / "autoencoder" / "checkpoints" / "latest").is_file()
    assert (trained.run_dir / "unet" / "checkpoints" / "latest").is_file()


@pytest.mark.slow  # trains a model; the conformance suite covers the contract by default
def test_maps_the_lesion_through_the_latent_ddpm(trained: LDM) -> None:
    images, truth = toy_brains(8, True, seed=1)
    raw = trained.step(images, torch.Generator().manual_seed(0))
    assert raw.nfe == 10 / 4  # 10 hops on 8² latents of 16² slices
    assert raw.pseudo_healthy.shape == images.shape
    healthy_tissue = foreground(images) & ~truth
    assert raw.anomaly_map[truth].mean() > 2 * raw.anomaly_map[healthy_tissue].mean()


def test_image_sides_must_survive_the_halvings() -> None:
    det = anodiff.create("ldm", preset="quick")
    with pytest.raises(AnodiffError, match="divisible by 2"):
        det.fit(torch.rand(4, 1, 15, 15))


@pytest.mark.slow  # trains a model; the conformance suite covers the contract by default
def test_a_checkpoint_without_its_autoencoder_is_named(trained: LDM, tmp_path: Path) -> None:
    trained.save(tmp_path / "model")
    weights = tmp_path / "model" / "detector.safetensors"
    state = load_file(weights)
    save_file({k: v for k, v in state.items() if not k.startswith("autoencoder.")}, weights)
    meta_file = tmp_path / "model" / "meta.json"  # a checksum that matches the stripped file
    meta = json.loads(meta_file.read_text())
    meta["files"]["detector.safetensors"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(AnodiffError, match="autoencoder"):
        anodiff.load(tmp_path / "model")
