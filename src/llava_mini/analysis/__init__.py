"""Efficiency and attention analyses (paper sec. 3, sec. 5.3, appendices A and F)."""
