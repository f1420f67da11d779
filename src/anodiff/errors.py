"""The project's one exception type for bad input (files, configs, checkpoints).

Boundaries (IO, CLI, checkpoint loading) validate once and raise :class:`AnodiffError`
with the offending file or key and the problem in the message, so users never see a
traceback from deep inside torch or nibabel.
"""


class AnodiffError(Exception):
    """Bad input that the user can fix: the message names the file/key and the problem."""


class CheckpointError(AnodiffError):
    """A checkpoint is missing, truncated, corrupted or does not fit the model."""
