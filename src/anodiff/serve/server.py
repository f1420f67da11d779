"""``anodiff serve RUN [--data DIR]``: open a session and run the app with uvicorn.

Binds 127.0.0.1 unless another host is asked for with ``allow_remote`` (then a warning is
printed: anyone who can reach the port and learns the token sees the data). The private
folder (uploads and results) is made with mode 0700 by :func:`tempfile.mkdtemp` and removed
when the server stops; ``--data`` is only read.
"""

from __future__ import annotations

import logging
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from anodiff.errors import AnodiffError
from anodiff.serve.app import Session, make_app
from anodiff.serve.index import CaseIndex
from anodiff.serve.uploads import Limits
from anodiff.serve.worker import DetectionWorker
from anodiff.workflows.run import read_run

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"


def open_session(run: Path, data: Path | None, *, device: str = "auto",
                 limits: Limits | None = None, token: str | None = None) -> Session:
    """The cases of ``data`` (if given), a detection worker for ``run``, a private folder."""
    spec = read_run(run)  # a bad run folder is refused before anything starts
    index = CaseIndex(spec.data.sequences or None)
    if data is not None:
        if not Path(data).is_dir():
            raise AnodiffError(f"{data}: --data must be a folder of cases")
        index.add_folder(Path(data), "data")
    private = Path(tempfile.mkdtemp(prefix="anodiff-serve-"))
    (private / "uploads").mkdir(mode=0o700)
    worker = DetectionWorker(Path(run), private / "results", device)
    return Session(index, worker, private / "uploads", token or secrets.token_urlsafe(24),
                   limits or Limits())


def serve(run: Path, data: Path | None, *, host: str = LOOPBACK, port: int = 8765,
          allow_remote: bool = False, device: str = "auto", limits: Limits | None = None
          ) -> None:
    """Run the viewer until interrupted (module docstring)."""
    import uvicorn

    if host not in (LOOPBACK, "localhost", "::1") and not allow_remote:
        raise AnodiffError(f"--host {host}: the viewer serves medical data; it listens on "
                           "127.0.0.1 unless you add --allow-remote")
    session = open_session(run, data, device=device, limits=limits)
    if host not in (LOOPBACK, "localhost", "::1"):
        log.warning("serve: listening on %s: anyone who can reach port %d and has the token "
                    "can see these scans", host, port)
    print(f"anodiff serve: {len(session.index.all())} case(s); open "
          f"http://{'127.0.0.1' if host in (LOOPBACK, 'localhost') else host}:{port}/"
          f"?token={session.token}", flush=True)
    try:
        uvicorn.run(make_app(session), host=host, port=port, log_level="warning")
    finally:
        session.close()


@contextmanager
def running(session: Session, port: int = 0) -> Iterator[str]:
    """The app on ``port`` of the loopback address (0: a free one) in a background thread,
    for a notebook or a test; yields the URL with the token and stops the server after."""
    import uvicorn

    if port == 0:
        with socket.socket() as probe:
            probe.bind((LOOPBACK, 0))
            port = int(probe.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(make_app(session), host=LOOPBACK, port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="anodiff-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AnodiffError(f"the viewer could not listen on {LOOPBACK}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{LOOPBACK}:{port}/?token={session.token}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
