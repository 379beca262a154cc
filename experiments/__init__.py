"""Experiment scripts reproducing the paper's analyses (run them from the repository root)."""
