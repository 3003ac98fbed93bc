"""Ray Tune sweeps over the training job (``python -m tuning.sweep``)."""
