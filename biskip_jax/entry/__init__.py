"""The command-line programs: flags and ``main`` of ``train.py``, ``evaluate.py``, ``deblur.py``
and ``demo.py``.

Each module defines its flags on import and a ``run()`` that parses them and calls ``main``; the
root scripts (``python train.py ...``) and the console scripts of ``pyproject.toml``
(``biskip-train``, ``biskip-evaluate``, ``biskip-deblur``, ``biskip-demo``) both call it. Import
one per process: their flags share names (``--config``).
"""
