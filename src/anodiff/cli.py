"""The ``anodiff`` command line (contract: shared design brief, "Command line").

Commands are added by the issues that build what they run; each validates its input at
this boundary and turns :class:`~anodiff.errors.AnodiffError` into a one-line message and
exit code 2 instead of a traceback.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from anodiff import __version__
from anodiff.errors import AnodiffError
from anodiff.methods import available

app = typer.Typer(
    help="Anomaly detection and localisation in medical images with diffusion models.",
    no_args_is_help=True,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"anodiff {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """anodiff: find and outline anomalies in medical images with diffusion models."""


@app.command()
def methods() -> None:
    """List the available methods with their supervision type."""
    found = available()
    if not found:
        typer.echo("No detection methods are installed in this version yet; the diffusion "
                   "engine is in anodiff.diffusion.")
        return
    width = max(len(m.name) for m in found)
    for info in found:
        typer.echo(f"{info.name:<{width}}  {info.supervision:<12}  {info.description}")


data_app = typer.Typer(help="Datasets: build the embedded benchmark.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Folder to write; must be empty or new.")],
    size: Annotated[int, typer.Option(help="Axial slices are SIZE x SIZE pixels (24-256).")] = 64,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    cases: Annotated[int, typer.Option(help="Cases per track (at least 4).")] = 100,
    tracks: Annotated[str, typer.Option(help="Comma-separated tracks to build.")] = (
        "tumour,stroke,wml,lowcontrast"),
    overwrite: Annotated[bool, typer.Option("--overwrite",
                                            help="Replace a previous build in --out.")] = False,
    workers: Annotated[int, typer.Option(help="Processes (0: one per available core).")] = 0,
) -> None:
    """Build the embedded synthetic brain-MRI benchmark (offline, from the MNI152 template)."""
    # Imported here so that other commands do not pay for nibabel/nilearn/scipy imports.
    from anodiff.data.synth import SynthConfig, build

    names = tuple(name.strip() for name in tracks.split(",") if name.strip())
    config = SynthConfig(size=size, seed=seed, cases=cases, tracks=names)
    start = time.perf_counter()
    manifest = build(out, config, overwrite=overwrite, workers=workers)
    shape = "x".join(str(n) for n in manifest["shape"])
    typer.echo(f"wrote {len(names)} track(s) x {cases} cases ({shape} voxels of "
               f"{manifest['voxel_mm']:g} mm, T1/T2/FLAIR + mask) to {out} "
               f"in {time.perf_counter() - start:.0f} s; see {out / 'README.md'}")


def run() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except AnodiffError as err:
        typer.echo(f"anodiff: error: {err}", err=True)
        sys.exit(2)
