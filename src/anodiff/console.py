"""What the command line prints while it works: anodiff's log records, one plain line each.

The library only logs (module loggers under ``anodiff``) and never configures logging; the
command line calls :func:`show_logs` once per command: INFO and above by default (a line
per phase and per case, progress as bars on a terminal or as lines, see
:mod:`anodiff.progress`), WARNING and above with ``--quiet``, DEBUG with ``--verbose``.
Lines go through ``tqdm.write`` so that they do not tear a progress bar. Run folders keep
their own INFO log files (``train.log``) whatever the console shows.
"""

from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm

_handler: logging.Handler | None = None


class ConsoleHandler(logging.Handler):
    """A record as its message alone, on the stderr of the moment, above any bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never stop the work (logging's rule)
            self.handleError(record)


def show_logs(level: int, prefix: str = "") -> None:
    """Print anodiff's records of ``level`` and above on stderr, each after ``prefix``
    (replacing an earlier call's handler, so repeated commands in one process print each
    line once)."""
    global _handler
    logger = logging.getLogger("anodiff")
    if _handler is not None:
        logger.removeHandler(_handler)
    _handler = ConsoleHandler(level)
    _handler.setFormatter(logging.Formatter(prefix.replace("%", "%%") + "%(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(min(level, logging.INFO))  # run folders' log files still get INFO
