"""Detection for the viewer: one background thread runs ``anodiff detect`` case after case.

One worker, because the networks already use every core (two detections at once would
each run at half speed or worse). A case's results go to its own folder of the session's
cache and are reused by every later request (``done``); a failed detection keeps its
message. The state of each case is polled by the page. The run's model is loaded once, by
the worker's thread when the first case comes, and serves every case after it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from anodiff.devices import resolve_device
from anodiff.errors import AnodiffError
from anodiff.methods import Detector
from anodiff.serve.index import Case
from anodiff.workflows.detect import detect_inputs
from anodiff.workflows.run import RunSpec, load_run

log = logging.getLogger(__name__)


@dataclass
class Job:
    """A case's detection: ``state`` queued, running, done or error."""

    state: str = "queued"
    message: str = ""
    started: float = 0.0
    seconds: float = 0.0
    out: Path | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def elapsed(self) -> float:
        """Seconds since the detection started (0 while queued)."""
        return time.perf_counter() - self.started if self.started else 0.0


class DetectionWorker:
    """Runs detect for queued cases into ``cache/<case id>``, one at a time."""

    def __init__(self, run: Path, cache: Path, device: str = "auto") -> None:
        self.run, self.cache, self.device = run, cache, device
        self.jobs: dict[str, Job] = {}
        self._loaded: tuple[Detector, RunSpec] | None = None  # the run, once a case needs it
        self._queue: queue.Queue[Case | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="anodiff-detect", daemon=True)
        self._thread.start()

    def submit(self, case: Case) -> Job:
        """Queue ``case`` unless it is queued, running or done (then its job as it is)."""
        with self._lock:
            job = self.jobs.get(case.id)
            if job is not None and job.state != "error":
                return job
            self.jobs[case.id] = job = Job()
        self._queue.put(case)
        return job

    def job(self, key: str) -> Job | None:
        with self._lock:
            return self.jobs.get(key)

    def stop(self) -> None:
        """Finish the running case and end the thread."""
        self._queue.put(None)
        self._thread.join(timeout=600)

    def _loop(self) -> None:
        while (case := self._queue.get()) is not None:
            job = self.jobs[case.id]
            job.state, job.started = "running", time.perf_counter()
            out = self.cache / case.id
            try:
                if self._loaded is None:
                    self._loaded = load_run(self.run, resolve_device(self.device))
                report = detect_inputs(self.run, [case.source], out, progress=False,
                                       device=self.device, dicom_output="both",
                                       loaded=self._loaded)
                failures = report.failures
                if failures:
                    raise AnodiffError(failures[0].message)
                job.out, job.state = out, "done"
            except AnodiffError as err:
                job.state, job.message = "error", str(err)
                log.warning("serve: detection of %s failed: %s", case.source, err)
            except Exception as err:  # noqa: BLE001 - the server must outlive a bad case
                job.state, job.message = "error", f"{type(err).__name__}: {err}"
                log.exception("serve: detection of %s failed", case.source)
            job.seconds = time.perf_counter() - job.started
            job.done.set()
