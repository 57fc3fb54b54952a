"""Experiments that train and compare several models (the paper's ablations, in miniature)."""
