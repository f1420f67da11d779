"""The README's Python block runs as it stands (issue 20: the API a newcomer copies)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block(heading: str) -> str:
    """The first ```python block under ``heading``."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(f"\n{heading}\n"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {heading}"
    return match.group(1)


def test_the_readme_api_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(python_block("## In Python"), str(README), "exec"), namespace)
    assert (tmp_path / "my-model" / "meta.json").is_file()
    assert namespace["same"].config == namespace["det"].config
    assert "torch.Size" in capsys.readouterr().out
