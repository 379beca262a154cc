"""biskip-jax: a JAX/Flax reimplementation of Bi-Skip (Zhang et al., 2019).

Public modules (see README and DESIGN §9): ``models``, ``spl``, ``losses``, ``vgg``,
``metrics``, ``inference``. They are imported lazily so that ``import biskip_jax`` stays cheap.
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = ("models", "spl", "losses", "vgg", "metrics", "inference", "schemes", "blur",
           "input_pipeline", "train_step", "train_lib", "eval_lib")


def __getattr__(name: str):
  if name in _PUBLIC:
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
