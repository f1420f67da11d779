"""Progress of long work: a bar on a terminal, a few plain log lines anywhere else.

A tqdm bar written to a file or a cluster job's log becomes carriage-return-joined
updates (53 of them for an 11-s training), so bars are drawn only when stderr is a
terminal; elsewhere the same loop logs one INFO line when a tenth of it is done and one
at its end (``train: 500/1000 step, loss=0.0412, 61 s``). ``TQDM_DISABLE=1``, the command
line's ``--progress/--no-progress`` and ``--quiet`` decide over the terminal test
(:func:`set_progress`).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from tqdm.auto import tqdm

log = logging.getLogger("anodiff.progress")

Mode = Literal["auto", "on", "off"]
_mode: Mode = "auto"
LOG_EVERY = 0.1  # share of the work between two plain log lines


def set_progress(mode: Mode) -> None:
    """``on``: always bars; ``off``: never (plain lines); ``auto``: bars on a terminal."""
    global _mode
    _mode = mode


def bars_shown() -> bool:
    """Whether progress is drawn as bars (see the module docstring)."""
    if _mode != "auto":
        return _mode == "on"
    if os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes"):
        return False
    return sys.stderr.isatty()


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    initial: int = 0,
    enabled: bool = True,
) -> Any:
    """A tqdm bar over ``iterable`` (or for manual ``update``) on a terminal, else a
    :class:`PlainProgress` with the same interface; nothing at all when not ``enabled``."""
    if enabled and bars_shown():
        return tqdm(iterable, desc=desc, total=total, unit=unit, initial=initial)
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return PlainProgress(iterable, desc=desc, total=total, unit=unit, initial=initial,
                         enabled=enabled)


class PlainProgress:
    """tqdm's interface (iterate, ``update``, ``set_postfix``, ``close``, ``with``) as log
    lines: one each time another tenth of ``total`` is done and one at the end."""

    def __init__(self, iterable: Iterable[Any] | None, *, desc: str, total: int | None,
                 unit: str, initial: int, enabled: bool) -> None:
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.n, self._initial, self.enabled = initial, initial, enabled
        self._postfix = ""
        self._started = time.perf_counter()
        self._next = self._boundary(initial)
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("nothing to iterate: progress_bar() was given no iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more done; log a line when another tenth is done."""
        self.n += n
        if self.total and self.n >= self._next and self.n < self.total:
            self._log()
            self._next = self._boundary(self.n)

    def set_postfix(self, values: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """What the next line appends (``loss=0.0412``)."""
        merged = {**(values or {}), **kwargs}
        self._postfix = ", ".join(f"{k}={v}" for k, v in merged.items())

    def close(self) -> None:
        """Log the final line once (only if something was done)."""
        if not self._closed:
            self._closed = True
            if self.n > self._initial:
                self._log()

    def _boundary(self, done: int) -> int:
        if not self.total:
            return math.inf  # type: ignore[return-value]
        step = max(1, math.ceil(self.total * LOG_EVERY))
        return (done // step + 1) * step

    def _log(self) -> None:
        if not self.enabled:
            return
        count = f"{self.n}/{self.total}" if self.total else str(self.n)
        extra = f", {self._postfix}" if self._postfix else ""
        log.info("%s: %s %s%s, %.0f s", self.desc, count, self.unit, extra,
                 time.perf_counter() - self._started)
