"""The ``anodiff`` command line (contract: shared design brief, "Command line").

Commands are added by the issues that build what they run; each validates its input at
this boundary and turns :class:`~anodiff.errors.AnodiffError` into a one-line message and
exit code 2 instead of a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from anodiff import __version__
from anodiff.devices import DEVICE_HELP  # imports PyTorch only when a device is resolved
from anodiff.errors import AnodiffError

if TYPE_CHECKING:  # the command line starts without PyTorch and scipy
    from anodiff.scoring.postprocess import PostProcess

app = typer.Typer(
    help="Anomaly detection and localisation in medical images with diffusion models.",
    no_args_is_help=True,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"anodiff {__version__}")
        raise typer.Exit()


DISTRIBUTED_COMMANDS = ("train", "evaluate", "detect")
"""The commands that run under torchrun (several processes); the others refuse."""


@app.callback()
def main(
    context: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only warnings, errors "
                                                            "and results; no progress."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print debugging detail too."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help="Progress "
                                         "bars (default: on a terminal only; plain lines "
                                         "otherwise)."),
    precision: str = typer.Option("auto", help="Network precision at inference: auto "
                                  "(bfloat16 on a CPU with AMX, where it was measured to pay; "
                                  "float32 elsewhere), float32 or bfloat16."),
    network_batch: str = typer.Option("whole", help="Images per network call at inference: "
                                      "whole (the method's batch_size; bit-reproducible), "
                                      "auto (timed on the first calls, the fastest kept) or a "
                                      "number."),
) -> None:
    """anodiff: find and outline anomalies in medical images with diffusion models."""
    from anodiff.console import show_logs
    from anodiff.progress import set_progress

    if quiet and verbose:
        raise AnodiffError("--quiet and --verbose contradict each other; give one")
    several = os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1")
    if several and context.invoked_subcommand not in DISTRIBUTED_COMMANDS:
        raise AnodiffError(f"`anodiff {context.invoked_subcommand}` runs in one process; "
                           f"under torchrun use {', '.join(DISTRIBUTED_COMMANDS)} "
                           "(docs/scaling.md)")
    if precision != "auto" or network_batch != "whole":
        from anodiff.diffusion.engine import configure

        configure(precision, network_batch)
    if _process_prefix():  # torchrun's other processes: the main one reports
        show_logs(logging.WARNING, prefix=_process_prefix())
        set_progress("off")
        return
    show_logs(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    set_progress("off" if quiet or progress is False else "on" if progress else "auto")


@app.command()
def methods() -> None:
    """List the available methods with their supervision type."""
    from anodiff.catalogue import BUILT_IN, has_plugins

    rows = list(BUILT_IN)
    # other packages' methods are known only by importing them; once the registry is
    # loaded anyway (a Python session), it also knows methods registered at run time
    if has_plugins() or "anodiff.methods" in sys.modules:
        from anodiff.methods import available

        rows = [(m.name, m.supervision, m.description) for m in available()]
    width = max(len(name) for name, _, _ in rows)
    for name, supervision, description in rows:
        typer.echo(f"{name:<{width}}  {supervision:<12}  {description}")


SYNTH_TRACKS = "tumour,stroke,wml,lowcontrast,structural,shift"
"""``anodiff data synth``'s default tracks: all of them (``anodiff.data.synth.TRACK_NAMES``,
spelled out so that the CLI starts without importing the generator)."""
data_app = typer.Typer(help="Datasets: build the embedded benchmark, inspect a folder.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Folder to write; must be empty or new.")],
    size: Annotated[int, typer.Option(help="Axial slices are SIZE x SIZE pixels (24-256).")] = 64,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    cases: Annotated[int, typer.Option(help="Cases per track (at least 4).")] = 100,
    tracks: Annotated[str, typer.Option(help="Comma-separated tracks to build.")] = (
        SYNTH_TRACKS),
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


SetOption = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a setting, e.g. --set method.train.steps=500 (repeatable).")]
DeviceOption = Annotated[str, typer.Option(help=f"Where the networks run: {DEVICE_HELP}.")]
LAYOUT_NAMES = "auto, cases, case, nnunet, bids, files, series, file, images"
"""``anodiff.data.LAYOUTS``, spelled out so that ``--help`` does not import the data layer."""
LayoutOption = Annotated[str, typer.Option(
    help=f"How the folder is laid out: {LAYOUT_NAMES} (auto: detected; `anodiff data "
         "inspect` shows what is read).")]
RenameOption = Annotated[list[str] | None, typer.Option(
    "--rename-sequence", help="Name a sequence the files call otherwise, e.g. "
                              "--rename-sequence T1map=t1 (repeatable).")]


ShardOption = Annotated[str | None, typer.Option(
    help="Do shard I of N (0-based, e.g. 0/4) of the work into --out, resumably; `anodiff "
         "merge OUT` combines the shards. Under torchrun each process takes its rank's.")]


def _renames(pairs: list[str] | None) -> dict[str, str]:
    """``["T1map=t1"]`` -> ``{"T1map": "t1"}``, each pair checked."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        raw, sep, name = pair.partition("=")
        if not sep or not raw.strip() or not name.strip():
            raise AnodiffError(f"--rename-sequence {pair!r}: expected FILE_NAME=SEQUENCE, e.g. "
                               "T1map=t1")
        out[raw.strip()] = name.strip()
    return out


def _postprocess(pairs: list[str] | None, example: str) -> PostProcess | None:
    """``--postprocess`` pairs as the shared post-processing settings (None: none given)."""
    from anodiff.config import build, parse_overrides
    from anodiff.scoring.postprocess import PostProcess

    if pairs is None:
        return None
    return build(PostProcess, parse_overrides(pairs, "--postprocess", example), "--postprocess")


@data_app.command("inspect")
def data_inspect(
    path: Annotated[Path, typer.Argument(help="A dataset folder, a case folder or files.")],
    layout: LayoutOption = "auto",
    rename_sequence: RenameOption = None,
    sequences: Annotated[str | None, typer.Option(
        help="Comma-separated sequences to read as channels, e.g. flair,t2 (default: every "
             "sequence found, or the run's).")] = None,
    run: Annotated[Path | None, typer.Option(help="Read the sequences a trained run takes.")
                   ] = None,
    all_: Annotated[bool, typer.Option("--all", help="List every case.")] = False,
) -> None:
    """Show what would be read from PATH as which case and sequence, and what is missing."""
    from anodiff.workflows.inspect import inspect_lines

    wanted = [s.strip() for s in sequences.split(",") if s.strip()] if sequences else None
    names = _renames(rename_sequence)
    if run is not None:
        from anodiff.workflows.run import read_run

        data = read_run(run).data
        wanted = wanted or (list(data.sequences) if data.sequences else None)
        names = {**(data.sequence_map or {}), **names}
    for line in inspect_lines(path, layout=layout, sequence_map=names, sequences=wanted,
                              all_cases=all_):
        typer.echo(line)


@app.command()
def train(
    method: Annotated[str, typer.Argument(help="Method name (see `anodiff methods`).")],
    data: Annotated[Path, typer.Option(help="Dataset folder (case folders, nnU-Net, BIDS, "
                                            "files, or the 2-D images layout).")],
    out: Annotated[Path, typer.Option(help="Run folder; rerun on it to resume.")],
    preset: Annotated[str, typer.Option(help="quick (tests), cpu (default) or paper.")] = "cpu",
    config: Annotated[Path | None, typer.Option(help="YAML with 'method' and 'data'.")] = None,
    set_: SetOption = None,
    device: DeviceOption = "auto",
    layout: LayoutOption = "auto",
    rename_sequence: RenameOption = None,
) -> None:
    """Train a method on a dataset into a run folder (resumable)."""
    from anodiff.config import merge
    from anodiff.workflows.run import config_values, train_run

    start = time.perf_counter()
    values = config_values(config, set_ or [])
    given = {"layout": layout} if layout != "auto" else {}
    if rename_sequence:
        given["sequence_map"] = _renames(rename_sequence)
    train_run(method, data, out, preset, merge(values, {"data": given}) if given else values,
              device)
    typer.echo(f"trained {method} in {time.perf_counter() - start:.0f} s; model in "
               f"{out / 'model'}, log in {out / 'train.log'}")


@app.command()
def detect(
    run: Annotated[Path, typer.Argument(help="A run folder made by `anodiff train`.")],
    inputs: Annotated[list[Path], typer.Argument(help="Images, volumes, DICOM series, case "
                                                      "folders, or folders of them (nnU-Net, "
                                                      "BIDS, flat).")],
    out: Annotated[Path, typer.Option(help="Folder for maps, masks and scores.csv.")],
    batch_size: Annotated[int, typer.Option(help="Slices per network batch.")] = 32,
    device: DeviceOption = "auto",
    layout: LayoutOption = "auto",
    rename_sequence: RenameOption = None,
    skip_existing: Annotated[bool, typer.Option(
        "--skip-existing", help="Leave out cases that scores.csv in --out already has as ok "
                                "(with their maps): resume a cohort.")] = False,
    dicom_output: Annotated[str, typer.Option(
        help="For DICOM inputs: objects (a DICOM SEG of the mask and Parametric Maps that "
             "viewers overlay on the source series), series (new image series, as before "
             "0.2) or both.")] = "objects",
    shard: ShardOption = None,
    postprocess: Annotated[list[str] | None, typer.Option(
        help="Clean each case's mask before it is written and counted, e.g. --postprocess "
             "min_lesion_ml=0.1 (drop 3-D lesions under 0.1 ml; volumes only); also "
             "opening_radius, closing_radius, min_component_size (pixels; repeatable). Map "
             "steps (interslice_median, ...) are refused here: `export --postprocess ... "
             "--refit DATA` gives a run them, with thresholds calibrated on them.")] = None,
) -> None:
    """Anomaly maps, masks and pseudo-healthy images in each input's own format and geometry."""
    from anodiff.workflows.detect import detect_inputs

    report = detect_inputs(run, inputs, out, batch_size=batch_size, device=device,
                           layout=layout, sequence_map=_renames(rename_sequence),
                           skip_existing=skip_existing, dicom_output=dicom_output,
                           shard=shard, postprocess=_postprocess(postprocess,
                                                                 "min_lesion_ml=0.1"))
    # each failure was logged as it happened ("failed: INPUT: why"), once
    done_before = f", {len(report.skipped)} done before" if report.skipped else ""
    typer.echo(f"{len(report.rows) - len(report.failures)} of {len(report.rows)} cases "
               f"done{done_before}; scores in {report.scores_csv}")
    if report.failures:
        raise typer.Exit(1)


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run folder made by `anodiff train`.")],
    data: Annotated[Path, typer.Option(help="Dataset folder with a test split.")],
    out: Annotated[Path, typer.Option(help="Folder for metrics.json and figures.")],
    fpr: Annotated[float, typer.Option(help="Healthy false-positive rate of the deployable "
                                            "threshold (calibrated on healthy validation "
                                            "slices).")] = 0.01,
    resamples: Annotated[int, typer.Option(help="Case-bootstrap resamples for the 95 % "
                                                "intervals (0: none).")] = 1000,
    device: DeviceOption = "auto",
    layout: LayoutOption = "auto",
    rename_sequence: RenameOption = None,
    batch_size: Annotated[int, typer.Option(help="Slices per network batch.")] = 32,
    shard: ShardOption = None,
    postprocess: Annotated[list[str] | None, typer.Option(
        help="Post-process every map before thresholds and metrics, e.g. --postprocess "
             "interslice_median=3 (the median over 3 neighbouring slices of a case; also "
             "median_size, erode_brain, min_lesion_ml, opening_radius, closing_radius, "
             "min_component_size; repeatable). Default: what the run records (export "
             "--postprocess), else none.")] = None,
) -> None:
    """Evaluate a trained run on a dataset's test split (metrics.json, curves, examples)."""
    from anodiff.workflows.evaluate import evaluate_run

    post = _postprocess(postprocess, "interslice_median=3")
    metrics = evaluate_run(run, data, out, fpr=fpr, device=device, resamples=resamples,
                           layout=layout, sequence_map=_renames(rename_sequence),
                           batch_size=batch_size, shard=shard, postprocess=post)
    if metrics is None:
        typer.echo(f"shard done; its batches are in {out / 'shards'}")
        return
    summary = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("dice_fpr", "volume_dice_fpr",
                                                           "pixel_ap", "image_auroc")
                        if k in metrics)
    typer.echo(f"{summary}; all metrics in {out / 'metrics.json'}")


@app.command()
def merge(
    out: Annotated[Path, typer.Argument(help="The --out folder the shards wrote into.")],
) -> None:
    """Combine the shards of `evaluate --shard` or `detect --shard` into one result."""
    from anodiff.workflows.merge import merge_shards

    typer.echo(merge_shards(out))


@app.command()
def serve(
    run: Annotated[Path, typer.Argument(help="A run folder made by `anodiff train`.")],
    data: Annotated[Path | None, typer.Option(help="A folder of cases to list (any layout "
                                                   "detect reads); only read.")] = None,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    host: Annotated[str, typer.Option(help="Address to listen on (another than 127.0.0.1 "
                                           "needs --allow-remote).")] = "127.0.0.1",
    allow_remote: Annotated[bool, typer.Option(
        "--allow-remote", help="Listen on --host even if others can reach it.")] = False,
    device: DeviceOption = "auto",
) -> None:
    """A local web viewer: pick or upload a case, detect, scroll its planes with the maps."""
    from anodiff.extras import require

    require("starlette", "serve", "anodiff serve")
    from anodiff.serve.server import serve as serve_viewer

    serve_viewer(run, data, host=host, port=port, allow_remote=allow_remote, device=device)


@app.command()
def benchmark(
    config: Annotated[Path, typer.Argument(help="Benchmark YAML (see benchmarks/).")],
    out: Annotated[Path, typer.Option(help="Folder for runs, results and report.html.")],
    device: DeviceOption = "auto",
) -> None:
    """Train and evaluate methods x datasets; write results tables and an HTML report."""
    from anodiff.workflows.benchmark import run_benchmark

    start = time.perf_counter()
    rows = run_benchmark(config, out, device)
    typer.echo(f"{len(rows)} results in {time.perf_counter() - start:.0f} s: "
               f"{out / 'results.md'}, report {out / 'report.html'}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the data, results and report.html.")] = (
        Path("anodiff-demo")),
    cases: Annotated[int, typer.Option(help="Test cases with a lesion (and as many "
                                            "without) to evaluate.")] = 3,
    device: DeviceOption = "auto",
) -> None:
    """AnoDDPM and baselines on the embedded benchmark: an HTML report in a minute or two."""
    from anodiff.workflows.demo import run_demo, verdict

    start = time.perf_counter()
    typer.echo(f"anodiff demo: building the synthetic tumour track and evaluating anoddpm and "
               f"two baselines on {cases} + {cases} test cases into {out} (a minute or two on "
               "2 CPU cores)")
    rows = run_demo(out, cases, device=device)
    for row in rows:
        typer.echo(f"  {row['method']:<17} pixel AP {row['pixel_ap']:.3f}  Dice at the FPR "
                   f"threshold {row['volume_dice_fpr']:.3f}  image AUROC "
                   f"{row['image_auroc']:.3f}  {row['seconds_per_image']:.2f} s/slice")
    typer.echo(verdict(rows))
    typer.echo(f"done in {time.perf_counter() - start:.0f} s; open {out / 'report.html'}")


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="A finished run folder made by `anodiff train`.")],
    out: Annotated[Path, typer.Option(help="New folder for the copy (run.yaml + model/).")],
    half: Annotated[bool, typer.Option("--half", help="Store weights as float16 (half the "
                                                      "size; loaded back as float32).")] = False,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Change a test-time setting, e.g. --set level=100 (repeatable).")] = None,
    refit: Annotated[Path | None, typer.Option(
        help="Dataset folder: refit what the method fits after training (the healthy-FPR "
             "and case thresholds; InvDetect's one-class model, tau, lambda) on its healthy "
             "slices, so that --set may change the settings those depend on (and a model "
             "saved before case scores gets them).")] = None,
    method: Annotated[str | None, typer.Option(
        help="Put the trained networks under another method that trains the same parts "
             "(e.g. thor on an anoddpm run); needs --refit.")] = None,
    preset: Annotated[str | None, typer.Option(
        help="Take this preset's test-time settings where they differ from cpu (fast: "
             "fewer network evaluations per slice); usually needs --refit.")] = None,
    device: DeviceOption = "auto",
    postprocess: Annotated[list[str] | None, typer.Option(
        help="Post-processing that `detect` applies to this run's maps and masks, e.g. "
             "--postprocess interslice_median=3 (the median over 3 neighbouring slices of a "
             "case; also median_size, erode_brain: map steps, which need --refit to calibrate "
             "the thresholds on filtered healthy maps; min_lesion_ml, opening_radius, "
             "closing_radius, min_component_size: mask steps; repeatable).")] = None,
) -> None:
    """Copy a run's model without training checkpoints or logs, to share or archive it."""
    from anodiff.config import parse_overrides
    from anodiff.workflows.export import export_run, size_bytes, weight_rounding_error

    export_run(run, out, half=half, settings=parse_overrides(set_ or []), refit_data=refit,
               device=device, method=method, preset=preset,
               postprocess=_postprocess(postprocess, "interslice_median=3"))
    message = f"exported {run} to {out} ({size_bytes(out) / 1e6:.1f} MB)"
    if half:
        message += f"; largest weight change {weight_rounding_error(run, out):.2e}"
    typer.echo(message)


@app.command()
def distill(
    run: Annotated[Path, typer.Argument(help="A finished anoddpm or counterfactual run folder (the "
                                             "teacher).")],
    out: Annotated[Path, typer.Option(help="New run folder for the student; rerun on it to "
                                           "resume.")],
    steps: Annotated[int, typer.Option(help="Network evaluations per slice of the student's "
                                            "decoder (1-4 is the point; the counterfactual "
                                            "method's encoding adds its own).")] = 2,
    data: Annotated[Path | None, typer.Option(help="Dataset folder with the run's training "
                                                   "slices (default: the run's own).")] = None,
    teacher_steps: Annotated[int | None, typer.Option(
        help="The teacher's DDIM hops, steps x a power of two (default: the first at or "
             "above the run's own hop count).")] = None,
    iterations: Annotated[int, typer.Option(help="Training steps per halving.")] = 400,
    device: DeviceOption = "auto",
) -> None:
    """Distil a run's decoder into a few-step student (progressive distillation)."""
    from dataclasses import replace

    from anodiff.workflows.distill import HALVING_TRAINING, distill_run

    if iterations < 1:
        raise AnodiffError(f"--iterations must be >= 1, got {iterations}")
    start = time.perf_counter()
    distill_run(run, out, steps, data_root=data, teacher_steps=teacher_steps,
                train=replace(HALVING_TRAINING, steps=iterations), device=device)
    typer.echo(f"distilled {run} into {steps}-step {out} in {time.perf_counter() - start:.0f} "
               f"s; log in {out / 'distill.log'}")


def run() -> None:
    """Console entry point: user errors, and file-system errors no boundary anticipated (a
    disk filling up mid-run), become one line on stderr and exit code 2."""
    try:
        app()
    except (AnodiffError, OSError) as err:
        typer.echo(f"{_process_prefix()}anodiff: error: {error_line(err)}", err=True)
        sys.exit(2)


def _process_prefix() -> str:
    """``[process r] `` before the lines of torchrun's other processes (rank r > 0)."""
    rank = os.environ.get("RANK", "0").strip() if "WORLD_SIZE" in os.environ else "0"
    return "" if rank in ("", "0") else f"[process {rank}] "


def error_line(err: AnodiffError | OSError) -> str:
    """The one line a user sees for an error: the message, or for a system error the file
    and the system's reason (``/out/x.nii.gz: no space left on device``)."""
    if isinstance(err, AnodiffError):
        return " ".join(str(err).split("\n"))
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{(err.strerror or str(err)).lower()}"
