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


@pytest.mark.parametrize(("option", "value"), [("--precision", "fp8"),
                                                 ("--network-batch", "0")])
def test_bad_engine_settings_are_one_line_errors(monkeypatch, capsys, option: str,
                                                 value: str) -> None:
    monkeypatch.setattr(sys, "argv", ["anodiff", option, value, "methods"])
    with pytest.raises(SystemExit) as exited:
        run()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"anodiff: error: {option} {value!r}") and err.count("\n") == 1


def test_the_built_in_catalogue_matches_the_registry() -> None:
    """``anodiff methods`` lists from a plain-text catalogue; it must say what the classes
    say."""
    from anodiff.catalogue import BUILT_IN

    registered = {(m.name, m.supervision, m.description) for m in anodiff.methods()}
    assert set(BUILT_IN) <= registered
    ours = {m.name for m in anodiff.methods() if not m.name.startswith("test-")}
    assert {name for name, _, _ in BUILT_IN} == ours


def test_help_and_methods_start_without_pytorch() -> None:
    """Issue 20: `anodiff --help` and `anodiff methods` must not pay for importing PyTorch
    and MONAI (seconds on 2 cores)."""
    import subprocess

    code = ("import sys; from typer.testing import CliRunner; from anodiff.cli import app; "
            "r = CliRunner(); assert r.invoke(app, ['--help']).exit_code == 0; "
            "assert 'anoddpm' in r.invoke(app, ['methods']).output; "
            "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
    assert callable(anodiff.methods) and anodiff.methods.create is anodiff.create
