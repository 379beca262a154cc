"""The command-line programs: flags and ``main`` of ``train.py``, ``evaluate.py``, ``deblur.py``,
``demo.py``, ``export.py`` and ``pretrained`` (a run written as a shipped model).

Each module defines its flags on import (those several programs share come from
:mod:`biskip_jax.cli`) and a ``run()`` that parses them and calls ``main`` through
:func:`biskip_jax.cli.run`, which turns a ``UserError`` into one line and the exit status 2. The
root scripts (``python train.py ...``) and the console scripts of ``pyproject.toml``
(``biskip-train``, ``biskip-evaluate``, ``biskip-deblur``, ``biskip-demo``, ``biskip-export``,
``biskip-pretrained``) both call it. Import one per process: their flags share names
(``--config``, ``--ckpt``).
"""
