"""Figures and the self-contained HTML report a clinician or a reviewer can open."""
