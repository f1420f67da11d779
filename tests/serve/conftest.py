"""A small run and data folder for the viewer's tests."""

from pathlib import Path

import pytest
from viewer_data import write_case

from anodiff.workflows.run import train_run


@pytest.fixture(scope="session")
def viewer_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A FLAIR-threshold run and a data folder of a lesioned and a healthy case."""
    root = tmp_path_factory.mktemp("viewer")
    for i in range(3):
        write_case(root / "train", f"h{i}", i, lesion=False)
    train_run("threshold", root / "train", root / "run", preset="quick",
              values={"data": {"size": 16}, "method": {"mode": "bright", "channel": "flair"}})
    write_case(root / "data", "sick", 7, lesion=True)
    write_case(root / "data", "well", 8, lesion=False)
    return root / "run", root / "data"
