"""Optax gradient transformations for regularization: L1/L2 decay with path masks, parameter EMA."""
