"""The package version, in one place (read by pyproject and `anodiff --version`)."""

__version__ = "0.1.0"
