"""anodiff's own methods as plain text, so that ``anodiff methods`` and ``--help`` answer
before PyTorch and MONAI load (importing them takes seconds on a small CPU).

Each entry repeats the ``supervision`` and ``description`` of the method's class;
``tests/test_cli.py`` checks them against the registry, so they cannot drift apart. Methods
of other packages (the ``anodiff.methods`` entry points) are not listed here: when there
are any, ``anodiff methods`` imports the registry and lists everything from it.
"""

from __future__ import annotations

from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "anodiff.methods"

BUILT_IN: tuple[tuple[str, str, str], ...] = (  # (name, supervision, description)
    ("anoddpm", "self",
     "partial simplex noising + ancestral DDPM denoising, squared error (Wyatt 2022)"),
    ("autoddpm", "unsupervised", "AnoDDPM's reconstruction, likely anomalies masked and "
                                 "re-sampled (RePaint) from the stitched image (Bercea 2023a)"),
    ("autoencoder", "unsupervised",
     "variational autoencoder trained on healthy slices, residual map (baseline)"),
    ("counterfactual", "weak",
     "DDIM encoding + classifier-free guided decoding to healthy (Sanchez 2022)"),
    ("ddpm-features", "semi", "pixel head on k labelled slices over a DDPM's decoder features, "
                              "the DDPM trained on every unlabelled slice (Baranchuk 2021)"),
    ("diffano", "weak",
     "DDIM noise encoding + classifier-guided decoding to healthy (Wolleb 2022)"),
    ("fndm", "weak", "hybrid-conditioned (image + memory-bank map) diffusion, classifier "
                     "gradient, DPM-Solver++ (Li 2023)"),
    ("imgcond", "self", "image-conditioned diffusion restoring synthetic anomalies, task-fold "
                        "ensemble, residual (or the paper's SSIM) map (Baugh 2024)"),
    ("invdetect", "unsupervised",
     "one-class SVM on DDIM-inverted patch latents + graph-cut refinement (Ma)"),
    ("ldm", "unsupervised", "DDPM on the latents of a KL autoencoder, decoded reconstruction, "
                            "residual map (Pinaya 2022a)"),
    ("pddpm", "unsupervised", "patched DDPM: one noised patch at a time with clean context, "
                              "one-step x0 prediction, stitched (Behrendt 2024a)"),
    ("segdiff", "supervised", "diffusion over the lesion mask conditioned on the image, n "
                              "sampled masks: mean map, spread as uncertainty (Wolleb 2022c, "
                              "Amit 2021)"),
    ("thor", "unsupervised", "AnoDDPM's trajectory harmonised with the input by intermediate "
                             "anomaly maps, harmonic-mean map (Bercea 2024)"),
    ("threshold", "unsupervised", "intensity thresholding after histogram equalisation "
                                  "(Meissen 2021) or healthy-intensity rarity"),
    ("unet", "supervised",
     "plain UNet trained on lesion masks with Dice + cross-entropy (baseline)"),
)


def has_plugins() -> bool:
    """Whether another package installs methods through the entry-point group."""
    return bool(entry_points(group=ENTRY_POINT_GROUP))
