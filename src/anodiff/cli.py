"""The ``anodiff`` command line (contract: shared design brief, "Command line").

Commands are added by the issues that build what they run; each validates its input at
this boundary and turns :class:`~anodiff.errors.AnodiffError` into a one-line message and
exit code 2 instead of a traceback.
"""

from __future__ import annotations

import sys

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


def run() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except AnodiffError as err:
        typer.echo(f"anodiff: error: {err}", err=True)
        sys.exit(2)
