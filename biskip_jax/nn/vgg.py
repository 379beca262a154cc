"""VGG19 feature extractor for the perceptual loss (paper §4.2, DESIGN §4).

``VGG19Features`` runs torchvision's ``vgg19().features`` up to one conv layer and returns that
conv's output before its ReLU (DeblurGAN's conv3_3). Its ImageNet weights come from
:mod:`biskip_jax.nn.vgg_loading`.
"""

from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from biskip_jax.nn.conv import Conv


class VGGLayer(NamedTuple):
  """One conv of VGG19: its name, its index in torchvision's ``features`` and its width."""
  name: str
  index: int
  channels: int


LAYERS: tuple[VGGLayer, ...] = tuple(
    VGGLayer(name, index, channels) for name, index, channels in (
        ("conv1_1", 0, 64), ("conv1_2", 2, 64),
        ("conv2_1", 5, 128), ("conv2_2", 7, 128),
        ("conv3_1", 10, 256), ("conv3_2", 12, 256), ("conv3_3", 14, 256), ("conv3_4", 16, 256),
        ("conv4_1", 19, 512), ("conv4_2", 21, 512), ("conv4_3", 23, 512), ("conv4_4", 25, 512),
        ("conv5_1", 28, 512), ("conv5_2", 30, 512), ("conv5_3", 32, 512), ("conv5_4", 34, 512),
    ))
LAYER_NAMES = tuple(layer.name for layer in LAYERS)
INPUTS = ("imagenet", "raw")  # normalize_input's modes (config.loss.vgg_input).

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def layers_up_to(layer: str) -> tuple[VGGLayer, ...]:
  if layer not in LAYER_NAMES:
    raise ValueError(f"Unknown VGG19 layer {layer!r}; valid layers: {', '.join(LAYER_NAMES)}.")
  return LAYERS[:LAYER_NAMES.index(layer) + 1]


def normalize_input(x: jnp.ndarray, mode: str) -> jnp.ndarray:
  """Maps generator-range images to what VGG19 expects.

  Args:
    x: [N, H, W, 3] float RGB in [-1, 1].
    mode: "imagenet" (to [0, 1], then minus ImageNet mean, over std; as BasicSR) or "raw"
      (unchanged, as DeblurGAN).

  Returns:
    [N, H, W, 3], same dtype as ``x``.
  """
  if mode == "raw":
    return x
  if mode == "imagenet":
    mean = jnp.asarray(IMAGENET_MEAN, x.dtype)
    std = jnp.asarray(IMAGENET_STD, x.dtype)
    return ((x + 1) / 2 - mean) / std
  raise ValueError(f"Unknown VGG input normalisation {mode!r}; use one of {', '.join(INPUTS)}.")


class VGG19Features(nn.Module):
  """VGG19's convs (3x3, padding 1) + ReLU + 2x2 max pools, up to conv ``layer``.

  Attributes:
    layer: the last conv run (see ``LAYER_NAMES``); its output is returned before its ReLU.
    dtype: computation dtype (params stay float32).
  """
  layer: str = "conv3_3"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """Args: x: [N, H, W, 3] normalised RGB (see ``normalize_input``).

    Returns:
      [N, H / 2^k, W / 2^k, C] (sizes floored), k = number of pools before ``layer``.
    """
    layers = layers_up_to(self.layer)
    x = x.astype(self.dtype)
    for i, spec in enumerate(layers):
      if i > 0:
        x = nn.relu(x)
        if spec.name.endswith("_1"):  # A new block starts after a pool.
          x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
      x = Conv(spec.channels, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
               name=spec.name)(x)
    return x


# ---------------------------------------------------------------------------------------------
# Reading torch files without running their code.


# ---------------------------------------------------------------------------------------------
# Getting the weights.
