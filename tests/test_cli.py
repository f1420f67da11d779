import subprocess
import sys

from typer.testing import CliRunner

import anodiff
from anodiff.cli import app


def test_version_and_methods_commands() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"anodiff {anodiff.__version__}"
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0
    for info in anodiff.methods():
        assert info.name in result.output


def test_console_script_reports_usage_errors_without_traceback() -> None:
    code = ("import sys; sys.argv = ['anodiff', 'no-such-command']; "
            "from anodiff.cli import run; run()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "No such command" in proc.stderr and "Traceback" not in proc.stderr
