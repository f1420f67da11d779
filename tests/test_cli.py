import sys

import pytest
from typer.testing import CliRunner

import anodiff
from anodiff.cli import app, run


def test_version_and_methods_commands() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"anodiff {anodiff.__version__}"
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0
    for info in anodiff.methods():
        assert info.name in result.output


def test_console_script_reports_usage_errors_without_traceback(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["anodiff", "no-such-command"])
    with pytest.raises(SystemExit) as exited:
        run()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "No such command" in err and "Traceback" not in err


def test_user_errors_are_one_line_with_exit_code_2(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setattr(sys, "argv", ["anodiff", "detect", str(tmp_path / "no-run"),
                                      str(tmp_path), "--out", str(tmp_path / "o"),
                                      "--device", "tpu"])
    with pytest.raises(SystemExit) as exited:
        run()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("anodiff: error: ") and err.count("\n") == 1
