"""Applying a trained model: reading inputs, writing masks and overlays, the MLflow model."""
