"""The sound-matching model: features, network, loss, metrics, checkpoints.

Imports only ``synth`` (never Ray), so inference runs anywhere torch does.
"""
