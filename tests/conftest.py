"""Shared pytest fixtures: tiny configs for fast CPU tests."""

import os

# Keep tests on the CPU and single-threaded XLA compiles predictable.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
