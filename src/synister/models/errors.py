"""The one error type of a model that cannot be used, whatever form it came in."""


class ModelError(ValueError):
    """A model (bundle, checkpoint, setup, calibration) is missing, unreadable or does not fit;
    the message names the file and what is wrong. :class:`~.checkpoint.CheckpointError`,
    :class:`~.manifest.BundleError` and :class:`~.calibration.CalibrationError` are ones."""
