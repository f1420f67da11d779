"""Tests for anodiff.progress: bars on a terminal only, a few plain lines elsewhere."""

import logging

import pytest

from anodiff.progress import PlainProgress, bars_shown, progress_bar, set_progress


@pytest.fixture(autouse=True)
def _auto() -> None:
    yield
    set_progress("auto")


class Stream:
    """A stderr that is or is not a terminal."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def test_bars_only_on_a_terminal_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr("sys.stderr", Stream(tty=False))
    assert not bars_shown()
    assert isinstance(progress_bar(range(3), desc="x"), PlainProgress)
    set_progress("on")
    assert bars_shown()
    set_progress("auto")
    monkeypatch.setattr("sys.stderr", Stream(tty=True))
    assert bars_shown()
    monkeypatch.setenv("TQDM_DISABLE", "1")  # tqdm's own switch is honoured
    assert not bars_shown()
    monkeypatch.delenv("TQDM_DISABLE")
    set_progress("off")
    assert isinstance(progress_bar(range(3), desc="x"), PlainProgress)


def test_plain_lines_every_tenth_and_at_the_end(caplog: pytest.LogCaptureFixture) -> None:
    set_progress("off")
    with caplog.at_level(logging.INFO, logger="anodiff.progress"):
        assert list(progress_bar(range(100), desc="localise", unit="slice")) == list(range(100))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10  # at 10, 20, ..., 90 and the end
    assert lines[0].startswith("localise: 10/100 slice") and lines[-1].startswith(
        "localise: 100/100 slice")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="anodiff.progress"):
        bar = progress_bar(total=1000, initial=990, desc="train", unit="step")
        for _ in range(10):
            bar.update(1)
            bar.set_postfix({"loss": "0.0412"})
        bar.close()
        bar.close()
    assert [r.getMessage()[:38] for r in caplog.records] == [
        "train: 1000/1000 step, loss=0.0412, 0 "]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="anodiff.progress"):
        list(progress_bar(range(50), desc="quiet", enabled=False))
    assert not caplog.records
