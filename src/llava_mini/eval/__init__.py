"""Evaluation: the synthetic held-out set (and, later, the paper's benchmarks)."""
