"""What the command line runs: training runs, detection on files, evaluation, benchmarks.

Each workflow is a plain function the CLI wraps (and a notebook can call); they validate
their inputs and raise :class:`~anodiff.errors.AnodiffError` with a clear message.
"""
