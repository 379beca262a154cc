"""Speed benchmarks, JAX vs PyTorch (run from the repository root:
``python -m benchmarks.NAME``)."""
