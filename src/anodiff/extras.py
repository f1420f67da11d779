"""Optional dependencies: each serves one feature and is installed with its extra.

``pip install anodiff`` installs what every command needs; ``anodiff[synth]`` (nilearn, for
the embedded benchmark's MNI152 template), ``anodiff[graphcut]`` (PyMaxflow, InvDetect's
graph-cut refinement), ``anodiff[report]`` (matplotlib, figures and report.html) and
``anodiff[serve]`` (Starlette and uvicorn, the browser viewer) add one feature each;
``anodiff[all]`` has them all. A feature whose extra is missing says so in one line naming
the ``pip install`` that brings it.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from anodiff.errors import AnodiffError

# The module each extra provides (as imported), for the error message and the checks.
EXTRAS = {"synth": "nilearn", "graphcut": "maxflow", "report": "matplotlib",
          "serve": "starlette"}


def installed(extra: str) -> bool:
    """Whether the module of ``extra`` can be imported (found, not imported: cheap)."""
    try:
        return importlib.util.find_spec(EXTRAS[extra]) is not None
    except ValueError:  # a module set to None in sys.modules (how tests hide one)
        return False


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` (of ``extra``), or refuse ``feature`` with the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise AnodiffError(f"{feature} needs {EXTRAS[extra]}, which is not installed: "
                           f"pip install 'anodiff[{extra}]'") from err
