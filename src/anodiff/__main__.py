"""``python -m anodiff`` runs the command line (also under ``torchrun -m anodiff``)."""

from anodiff.cli import run

run()
