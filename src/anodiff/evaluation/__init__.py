"""Evaluation: metrics that agree with scikit-learn/MONAI, and the protocol behind metrics.json."""

from anodiff.evaluation.protocol import evaluate

__all__ = ["evaluate"]
