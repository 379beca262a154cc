"""Several sources as one: a weighted mixture for training, a concatenation for evaluation.

``config.data.source = "mix"`` with ``config.data.mix = {"frames": 0.5, "synthetic": 0.5}``
(:func:`biskip_jax.data.input_pipeline.get_source`): each named source is built from its own config
section as if it were the only one.
"""

from typing import Any, Sequence

import numpy as np


class MixtureSource:
  """Records of several sources in fixed proportions: ``config.data.source = "mix"``.

  Record ``i`` belongs to source ``j`` where ``frac(i * φ)`` (φ the golden ratio, a
  low-discrepancy sequence) falls in ``j``'s share of the cumulative weights, so every run of
  consecutive records, and every shuffled epoch, holds each source in its proportion up to a
  few records; its index in that source is ``i mod len(source)``. Evaluation concatenates the
  sources' pairs instead (:class:`ConcatSource`).
  """

  _PHI = (np.sqrt(5.0) - 1.0) / 2.0

  def __init__(self, sources: Sequence[Any], weights: Sequence[float]):
    if len(sources) != len(weights) or not sources or min(weights) <= 0:
      raise ValueError("MixtureSource needs one positive weight per source.")
    self.sources = list(sources)
    w = np.asarray(weights, np.float64)
    self._bounds = np.cumsum(w / w.sum())
    self._len = sum(len(s) for s in sources)

  def __len__(self) -> int:
    return self._len

  def pick(self, index: int) -> tuple[int, int]:
    """``(source, index in it)`` of record ``index``."""
    u = (index * self._PHI) % 1.0
    j = min(int(np.searchsorted(self._bounds, u, side="right")), len(self.sources) - 1)
    return j, index % len(self.sources[j])

  def name(self, index: int) -> str:
    j, i = self.pick(index)
    return self.sources[j].name(i)

  def load(self, index: int) -> dict[str, Any]:
    j, i = self.pick(index)
    return self.sources[j].load(i)

  def random_crop(self, index: int, size: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    j, i = self.pick(index)
    crop = getattr(self.sources[j], "random_crop", None)
    return crop(i, size, rng) if crop is not None else None


class ConcatSource:
  """The pairs of several sources one after another (the evaluation split of a mix)."""

  def __init__(self, sources: Sequence[Any]):
    self.sources = [s for s in sources if len(s)]
    self._offsets = np.cumsum([0] + [len(s) for s in self.sources])

  def __len__(self) -> int:
    return int(self._offsets[-1])

  def _locate(self, index: int) -> tuple[Any, int]:
    j = int(np.searchsorted(self._offsets, index, side="right")) - 1
    return self.sources[j], index - int(self._offsets[j])

  def name(self, index: int) -> str:
    source, i = self._locate(index)
    return source.name(i)

  def load(self, index: int) -> dict[str, Any]:
    source, i = self._locate(index)
    return source.load(i)
