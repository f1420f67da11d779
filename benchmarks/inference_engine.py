"""What makes one network evaluation cheaper on a CPU (issue 23, "the inference engine").

Run: ``.venv/bin/python benchmarks/inference_engine.py [--run RUN] [--out CSV]``.

Times one forward pass of a trained denoiser (``--run``: a run folder whose detector has a
``unet``, e.g. the demo's AnoDDPM) or of a freshly built ``--preset`` UNet, at 64² with the
run's channels, under each way of running it the issue names:

* **eager** float32, as the package builds it (``channels_last``) and contiguous;
* **threads**: intra-op threads 1 and 2, and two processes of one thread each (throughput of
  the machine, not latency of one call);
* **batch size** 1, 8, 32, 64 (ms per image);
* **autocast** bfloat16 and float16 (CPU autocast);
* **torch.compile** (inductor, default mode; its compile time reported separately);
* **dynamic int8 quantisation** of the linear layers (``torch.ao.quantization.quantize_dynamic``:
  PyTorch has no dynamic quantisation of convolutions, so only the attention and embedding
  layers change — the measured speed says whether that is worth anything);
* **ONNX Runtime** on the exported graph (when ``onnx`` and ``onnxruntime`` are installed).

Each figure is the median of ``--repeats`` timed calls after one warm-up, at a mid-range
noise level; the error column is ``||out - out_eager|| / ||out_eager||`` on the same batch,
so a faster variant that changes the prediction says by how much. A variant that cannot run
here is a row with its reason, not a crash. Run it alone on the machine: two torch jobs on 2
cores make every figure worthless.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import multiprocessing
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import torch
from engine import median_seconds
from torch import Tensor, nn

from anodiff.nets.builders import build_unet

LEVEL = 250  # a mid-range timestep of a 1000-step schedule


class Denoiser(nn.Module):
    """``unet(x, t)`` with the timestep as a tensor input: the one signature every engine
    below (compile, ONNX) can trace."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.unet(x, t)


@dataclass
class Row:
    """One timed variant."""

    variant: str
    threads: int
    batch: int
    seconds_per_batch: float = float("nan")
    ms_per_image: float = float("nan")
    relative_error: float = float("nan")
    setup_seconds: float = 0.0
    note: str = ""


def load_denoiser(run: Path | None, preset: str, channels: int) -> Denoiser:
    """The trained UNet of ``run`` (its detector's ``unet``), or an untrained ``preset`` one."""
    if run is None:
        return Denoiser(build_unet(preset, channels)).eval()
    from anodiff.workflows.run import load_run

    detector, _ = load_run(run, "cpu")
    unet = getattr(detector, "unet", None)
    if unet is None:
        raise SystemExit(f"{run}: its detector ({type(detector).__name__}) has no unet to time")
    return Denoiser(unet).eval()


def inputs(channels: int, batch: int, size: int) -> tuple[Tensor, Tensor]:
    """A reproducible noisy batch and its timesteps."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, size, size, generator=generator)
    return x, torch.full((batch,), LEVEL, dtype=torch.long)


def relative_error(out: Tensor, reference: Tensor) -> float:
    return float((out.float() - reference).norm() / reference.norm().clamp_min(1e-12))


@contextlib.contextmanager
def threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def time_callable(variant: str, call: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor,
                  reference: Tensor | None, repeats: int, thread_count: int,
                  setup_seconds: float = 0.0, note: str = "") -> Row:
    """Time ``call(x, t)``; its error against ``reference`` when given."""
    with threads(thread_count), torch.inference_mode():
        seconds = median_seconds(lambda: call(x, t), repeats)
        error = relative_error(call(x, t), reference) if reference is not None else float("nan")
    return Row(variant, thread_count, len(x), seconds, 1000 * seconds / len(x), error,
               setup_seconds, note)


def unavailable(variant: str, thread_count: int, batch: int, problem: BaseException) -> Row:
    first_line = str(problem).strip().splitlines()[0] if str(problem).strip() else ""
    return Row(variant, thread_count, batch, note=f"not run: {type(problem).__name__}: "
               f"{first_line[:160]}")


def autocast_call(model: Denoiser, dtype: torch.dtype) -> Callable[[Tensor, Tensor], Tensor]:
    def call(x: Tensor, t: Tensor) -> Tensor:
        with torch.autocast("cpu", dtype=dtype):
            return model(x, t)
    return call


def compiled(model: Denoiser, x: Tensor, t: Tensor) -> tuple[Callable, float]:
    """``torch.compile`` (inductor) and the seconds its first call took (the compile)."""
    fast = torch.compile(model)
    start = time.perf_counter()
    with torch.inference_mode():
        fast(x, t)
    return fast, time.perf_counter() - start


def quantised(model: Denoiser) -> tuple[nn.Module, float]:
    """Dynamic int8 quantisation of the linear layers (a copy) and the seconds it took."""
    from torch.ao.quantization import quantize_dynamic

    start = time.perf_counter()
    out = quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    return out, time.perf_counter() - start


def onnx_session(model: Denoiser, x: Tensor, t: Tensor, thread_count: int, folder: Path
                 ) -> tuple[Callable[[Tensor, Tensor], Tensor], float]:
    """Export to ONNX (dynamic batch) and an ONNX Runtime session on the CPU; the seconds
    the export and session creation took."""
    import onnxruntime

    start = time.perf_counter()
    path = folder / "unet.onnx"
    try:  # the TorchScript exporter, where this torch still has it
        torch.onnx.export(model, (x, t), str(path), input_names=["x", "t"],
                          output_names=["eps"], dynamo=False,
                          dynamic_axes={"x": {0: "batch"}, "t": {0: "batch"},
                                        "eps": {0: "batch"}})
    except Exception:  # noqa: BLE001 - then the dynamo exporter (needs onnxscript)
        batch = torch.export.Dim("batch")
        torch.onnx.export(model, (x, t), str(path), input_names=["x", "t"],
                          output_names=["eps"], dynamo=True,
                          dynamic_shapes={"x": {0: batch}, "t": {0: batch}})
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = thread_count
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])

    def call(xs: Tensor, ts: Tensor) -> Tensor:
        out = session.run(None, {"x": xs.numpy(), "t": ts.numpy()})[0]
        return torch.from_numpy(out)
    return call, time.perf_counter() - start


def _one_thread_worker(model: Denoiser, job: tuple[int, int, int, int], barrier: Any,
                       results: Any) -> None:
    """In a child process with one thread: seconds per batch (median), timed once every
    child is ready, so that the children run at the same time."""
    channels, batch, size, repeats = job
    torch.set_num_threads(1)
    x, t = inputs(channels, batch, size)
    with torch.inference_mode():
        model(x, t)
        barrier.wait()
        results.put(median_seconds(lambda: model(x, t), repeats))


def processes_row(model: Denoiser, channels: int, batch: int, size: int, repeats: int,
                  count: int = 2) -> Row:
    """``count`` processes of one thread each (spawned: forking after OpenMP is unsafe),
    each on its own batch, at the same time: the machine's throughput (ms per image over
    all processes)."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(count), context.Queue()
    workers = [context.Process(target=_one_thread_worker,
                               args=(model, (channels, batch, size, repeats), barrier, results))
               for _ in range(count)]
    for worker in workers:
        worker.start()
    per_batch = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    seconds = statistics.median(per_batch)
    return Row(f"{count} processes x 1 thread", 1, batch * count, seconds,
               1000 * seconds / (batch * count), float("nan"), 0.0,
               f"each process {seconds:.3f} s per batch of {batch}, at the same time")


def noise_rows(channels: int, batch: int, size: int, repeats: int) -> list[Row]:
    """One simplex draw for a batch at AnoDDPM's settings for the size (4 octaves, a first
    period of size / 4 px at 64²), eager and with its kernel compiled: AnoDDPM draws one
    per network evaluation, AutoDDPM's re-sampling three."""
    from anodiff.diffusion import noise
    from anodiff.methods.noised_ddpm import AnoDDPMConfig, noise_options

    options = noise_options(AnoDDPMConfig(), size)
    shape = (batch, channels, size, size)

    def draw() -> Tensor:
        return noise.simplex_noise(shape, level=100, generator=torch.Generator().manual_seed(0),
                                   **options)

    rows = []
    with threads(2):
        reference = draw()
        seconds = median_seconds(draw, repeats)
        rows.append(Row("simplex noise draw, eager", 2, batch, seconds, 1000 * seconds / batch,
                        note=f"octaves {options['octaves']}, period {options['frequency']:g} px"))
        kernel = noise._simplex3
        try:
            noise._simplex3 = torch.compile(kernel)
            start = time.perf_counter()
            draw()
            setup = time.perf_counter() - start
            seconds = median_seconds(draw, repeats)
            rows.append(Row("simplex noise draw, kernel compiled", 2, batch, seconds,
                            1000 * seconds / batch, relative_error(draw(), reference), setup))
        except Exception as problem:  # noqa: BLE001
            rows.append(unavailable("simplex noise draw, kernel compiled", 2, batch, problem))
        finally:
            noise._simplex3 = kernel
    return rows


def measure(model: Denoiser, channels: int, size: int, batch: int, repeats: int) -> list[Row]:
    """Every variant's row; the first is the baseline (eager, 2 threads, ``batch``)."""
    rows: list[Row] = []
    x, t = inputs(channels, batch, size)
    with torch.inference_mode():
        reference = model(x, t).float()
    base = lambda xs, ts: model(xs, ts)  # noqa: E731
    for count in (2, 1):
        rows.append(time_callable("eager float32, channels_last", base, x, t, reference,
                                  repeats, count))
    contiguous = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    rows.append(time_callable("eager float32, contiguous", contiguous, x, t, reference, repeats,
                              2))
    for size_of_batch in (1, 8, 64):
        xb, tb = inputs(channels, size_of_batch, size)
        rows.append(time_callable("eager float32, channels_last", base, xb, tb, None, repeats, 2))
    rows.append(processes_row(model, channels, batch, size, repeats))
    for name, dtype in (("autocast bfloat16", torch.bfloat16), ("autocast float16",
                                                                torch.float16)):
        try:
            rows.append(time_callable(name, autocast_call(model, dtype), x, t, reference,
                                      repeats, 2))
        except Exception as problem:  # noqa: BLE001 - a variant this machine cannot run
            rows.append(unavailable(name, 2, batch, problem))
    try:
        small, setup = quantised(model)
        rows.append(time_callable("dynamic int8 (linear layers)", small, x, t, reference,
                                  repeats, 2, setup))
    except Exception as problem:  # noqa: BLE001
        rows.append(unavailable("dynamic int8 (linear layers)", 2, batch, problem))
    try:
        fast, setup = compiled(model, x, t)
        rows.append(time_callable("torch.compile (inductor)", fast, x, t, reference, repeats, 2,
                                  setup, "setup = the first call's compile"))
    except Exception as problem:  # noqa: BLE001
        rows.append(unavailable("torch.compile (inductor)", 2, batch, problem))
    for count in (2, 1):
        try:
            with tempfile.TemporaryDirectory() as folder:
                call, setup = onnx_session(model, x, t, count, Path(folder))
                rows.append(time_callable("ONNX Runtime (CPU)", call, x, t, reference, repeats,
                                          count, setup, "setup = export + session"))
        except Exception as problem:  # noqa: BLE001
            rows.append(unavailable("ONNX Runtime (CPU)", count, batch, problem))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run folder whose detector has a unet")
    parser.add_argument("--preset", default="cpu", help="the UNet preset without --run")
    parser.add_argument("--channels", type=int, default=3, help="without --run")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write the rows as CSV here")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_denoiser(args.run, args.preset, args.channels)
    channels = next(p for p in model.parameters() if p.dim() == 4).shape[1]
    rows = measure(model, channels, args.size, args.batch, args.repeats)
    rows += noise_rows(channels, args.batch, args.size, args.repeats)
    baseline = rows[0].ms_per_image
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{date.today()}, {args.run or args.preset + ' UNet (untrained)'}, {args.size}²")
    print("| variant | threads | batch | ms / image | in network evaluations (eager, 2 "
          f"threads, batch {args.batch}) | relative error | setup s | note |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        ratio = row.ms_per_image / baseline
        print(f"| {row.variant} | {row.threads} | {row.batch} | {row.ms_per_image:.2f} | "
              f"{ratio:.2f} | {row.relative_error:.2e} | {row.setup_seconds:.1f} | {row.note} |")
    if args.out:
        with args.out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(Row.__dataclass_fields__))
            writer.writeheader()
            writer.writerows(vars(row) for row in rows)


if __name__ == "__main__":
    main()
