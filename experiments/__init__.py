"""Experiment scripts reproducing the paper's analyses (run from the repository root:
``python -m experiments.NAME``)."""
