"""The Starlette app of ``anodiff serve``: the page, the API, the token, the limits.

Every request must carry the session token (``?token=`` on the page's URL, as Jupyter
prints it; the page sends it in the ``X-Anodiff-Token`` header), compared in constant time.
Requests name cases by id and files by their number in the case's listing: nothing a
request says is joined into a path. Bad input (an unknown case, a refused upload) is one
JSON line ``{"error": ...}`` with a 4xx status, never a traceback.
"""

from __future__ import annotations

import itertools
import secrets
import shutil
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from anodiff.errors import AnodiffError
from anodiff.serve.index import CaseIndex
from anodiff.serve.uploads import Limits, receive, safe_name
from anodiff.serve.views import CaseView
from anodiff.serve.worker import DetectionWorker

STATIC = {"viewer.js": "text/javascript", "viewer.css": "text/css"}
TOKEN_HEADER = "X-Anodiff-Token"


@dataclass
class Session:
    """What the app serves: the cases, the detection worker, the private upload folder."""

    index: CaseIndex
    worker: DetectionWorker
    uploads: Path
    token: str
    limits: Limits = field(default_factory=Limits)
    views: dict[str, CaseView] = field(default_factory=dict)
    _numbers: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def view(self, key: str) -> CaseView | None:
        """The case's views once its detection is done (read on first use)."""
        job = self.worker.job(key)
        if job is None or job.state != "done" or job.out is None:
            return None
        with self._lock:
            if key not in self.views:
                self.views[key] = CaseView(self.index.get(key), job.out)
            return self.views[key]

    def upload_folder(self) -> Path:
        folder = self.uploads / f"u{next(self._numbers)}"
        folder.mkdir(mode=0o700)
        return folder

    def close(self) -> None:
        """Stop the worker and remove the private folder (uploads and results)."""
        self.worker.stop()
        shutil.rmtree(self.uploads.parent, ignore_errors=True)


class TokenMiddleware(BaseHTTPMiddleware):
    """Refuse any request without the session token."""

    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        given = request.headers.get(TOKEN_HEADER) or request.query_params.get("token") or ""
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            return JSONResponse({"error": "a valid session token is needed: open the URL "
                                          "that anodiff serve printed"}, status_code=403)
        return await call_next(request)


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def make_app(session: Session) -> Starlette:
    """The app over ``session``."""

    def case_or_none(request: Request) -> Any:
        try:
            return session.index.get(request.path_params["case"])
        except KeyError:
            return None

    async def page(request: Request) -> Response:
        html = resources.files("anodiff.serve").joinpath("static/index.html").read_text()
        return HTMLResponse(html.replace("{{TOKEN}}", session.token))

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return _error(f"no static file {name!r}", 404)
        text = resources.files("anodiff.serve").joinpath(f"static/{name}").read_text()
        return Response(text, media_type=STATIC[name])

    async def cases(request: Request) -> Response:
        rows = []
        for case in session.index.all():
            job = session.worker.job(case.id)
            rows.append({"id": case.id, "name": case.name, "origin": case.origin,
                         "state": "new" if job is None else job.state})
        return JSONResponse(rows)

    async def case_state(request: Request) -> Response:
        case = case_or_none(request)
        if case is None:
            return _error("unknown case", 404)
        if request.method == "POST":
            session.worker.submit(case)
        job = session.worker.job(case.id)
        body: dict[str, Any] = {"id": case.id, "name": case.name,
                                "state": "new" if job is None else job.state}
        if job is not None:
            seconds = job.seconds if job.state != "running" else job.elapsed()
            body.update(message=job.message, seconds=round(seconds, 2))
        try:
            view = session.view(case.id)
        except AnodiffError as err:
            return _error(str(err))
        if view is not None:
            body["meta"] = view.meta()
        return JSONResponse(body)

    async def volume(request: Request) -> Response:
        case = case_or_none(request)
        view = None if case is None else session.view(case.id)
        kind = request.path_params["kind"]
        if view is None or kind not in view.volumes:
            return _error("no such volume (unknown case, not detected yet, or unknown kind)",
                          404)
        return Response(view.volumes[kind].astype("<f4").tobytes(),
                        media_type="application/octet-stream")

    async def download(request: Request) -> Response:
        case = case_or_none(request)
        view = None if case is None else session.view(case.id)
        number = request.path_params["number"]
        if view is None or not 0 <= number < len(view.files):
            return _error("no such file", 404)
        path = view.files[number]
        return FileResponse(path, filename=path.name)

    async def upload(request: Request) -> Response:
        try:
            name = safe_name(request.query_params.get("name", ""))
            folder = session.upload_folder()
            source = await receive(request.stream(), folder, name, session.limits)
            added = session.index.add_folder(source, "upload")
        except AnodiffError as err:
            return _error(str(err))
        return JSONResponse([{"id": c.id, "name": c.name} for c in added])

    routes = [
        Route("/", page),
        Route("/static/{name}", static),
        Route("/api/cases", cases),
        Route("/api/cases/{case}", case_state, methods=["GET", "POST"]),
        Route("/api/cases/{case}/volume/{kind}", volume),
        Route("/api/cases/{case}/files/{number:int}", download),
        Route("/api/upload", upload, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(TokenMiddleware,
                                                           token=session.token)])
