"""Inference: load a model and ask about images and videos."""
