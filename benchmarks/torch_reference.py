"""The Bi-Skip generator, critic, losses and train step in plain PyTorch: the speed reference.

``benchmarks/inference.py`` and ``benchmarks/train_step.py`` time the JAX code against this
module in the same process, on the same device. To make the comparison like for like, the
networks here are the exact counterparts of ``biskip_jax.nn.models`` (same layers, padding,
norms and initial values: :func:`port_generator` and :func:`port_critic` copy Flax
parameters across) and :func:`train_step` runs the same algorithm as
``biskip_jax.train.train_step.train_step`` (one generator forward, ``n_critic`` WGAN-GP critic
updates on the batch with x̃ fixed, one generator update; eq. 4, 7, 11–13).
:func:`check_equivalence` measures how far the two implementations' outputs are apart.

Images are NCHW here (PyTorch's native layout) and NHWC on the JAX side; the port and the
check transpose. PyTorch is a test-only dependency of the project (requirements-dev.txt).
"""

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """XLA's "SAME" padding (low, high) of one spatial side."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


class ConvSame(nn.Module):
  """``nn.Conv2d`` with Flax/XLA "SAME" padding (asymmetric for even kernels)."""

  def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
    super().__init__()
    self.kernel, self.stride = kernel, stride
    symmetric = kernel % 2 == 1 and stride == 1
    self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2 if symmetric else 0)
    self.symmetric = symmetric

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if not self.symmetric:
      ph = _same_pads(x.shape[2], self.kernel, self.stride)
      pw = _same_pads(x.shape[3], self.kernel, self.stride)
      if ph != (ph[0], ph[0]) or pw != (pw[0], pw[0]):
        x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
      else:
        return F.conv2d(x, self.conv.weight, self.conv.bias, self.stride, (ph[0], pw[0]))
    return self.conv(x)


class UpSame(nn.Module):
  """5x5 stride-2 transposed conv equal to Flax's ``nn.ConvTranspose(padding="SAME")``.

  XLA pads the 2x-dilated input by (3, 2); PyTorch pads symmetrically, so this pads (3, 3)
  (``padding=1``) and drops the last row and column.
  """

  def __init__(self, cin: int, cout: int, kernel: int = 5):
    super().__init__()
    self.conv = nn.ConvTranspose2d(cin, cout, kernel, stride=2, padding=(kernel - 1) // 2 - 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[2], x.shape[3]
    return self.conv(x)[:, :, :2 * h, :2 * w]


def _norm(kind: str, channels: int, bn_momentum: float) -> nn.Module:
  if kind == "batch":
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=1.0 - bn_momentum)
  if kind == "instance":
    return nn.InstanceNorm2d(channels, eps=1e-6, affine=True)
  return nn.Identity()


class ConvNormAct(nn.Module):
  """conv(k x k) -> norm -> LeakyReLU (``models._ConvNormAct``)."""

  def __init__(self, cin: int, cout: int, kernel: int, norm: str, slope: float, mom: float):
    super().__init__()
    self.conv = ConvSame(cin, cout, kernel)
    self.norm = _norm(norm, cout, mom)
    self.slope = slope

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(self.norm(self.conv(x)), self.slope)


class ResBlock(nn.Module):
  """``models.ResBlock``: conv3x3-norm-act-conv3x3-norm + identity."""

  def __init__(self, c: int, num_convs: int, norm: str, slope: float, mom: float):
    super().__init__()
    self.convs = nn.ModuleList(ConvSame(c, c, 3) for _ in range(num_convs))
    self.norms = nn.ModuleList(_norm(norm, c, mom) for _ in range(num_convs))
    self.slope = slope

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = x
    for k, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      y = norm(conv(y))
      if k < len(self.convs) - 1:
        y = F.leaky_relu(y, self.slope)
    return x + y


class BiSkip(nn.Module):
  """``biskip_jax.nn.models.BiSkip`` in PyTorch (paper Fig. 5); NCHW in [-1, 1], any H, W."""

  def __init__(self, variant: str = "BS", channels: Sequence[int] = (32, 64, 128, 128, 128),
               skip_channels: Sequence[int] = (16, 32, 64, 64), num_res_blocks: int = 3,
               norm: str = "batch", pool: str = "avg", act_slope: float = 0.2,
               bn_momentum: float = 0.9):
    super().__init__()
    self.channels, self.pool, self.slope = tuple(channels), pool, act_slope
    self.deep = variant != "S"
    res_convs = {"BS": 2, "BS-cR": 1}.get(variant, 0)
    cna = dict(norm=norm, slope=act_slope, mom=bn_momentum)
    levels = len(channels)
    self.down, self.shallow, self.body = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
    self.res, self.deep_convs = nn.ModuleList(), nn.ModuleList()
    cin = 3
    for i, c in enumerate(channels):
      self.down.append(ConvNormAct(cin, c, 5, **cna))
      cin = c
      if i == levels - 1:
        break
      self.shallow.append(ConvSame(c, skip_channels[i], 1))
      self.body.append(ConvNormAct(c, c, 3, **cna))
      self.res.append(nn.Sequential(*[ResBlock(c, res_convs, norm, act_slope, bn_momentum)
                                      for _ in range(num_res_blocks if res_convs else 0)]))
      if self.deep:
        self.deep_convs.append(ConvSame(c, skip_channels[i], 3))
    self.up, self.up_norm = nn.ModuleList([None] * levels), nn.ModuleList([None] * levels)
    self.dec_a, self.dec_b = nn.ModuleList([None] * levels), nn.ModuleList([None] * levels)
    for i in reversed(range(levels)):
      c = channels[i]
      self.up[i] = UpSame(cin, c)
      self.up_norm[i] = _norm(norm, c, bn_momentum)
      width = c + (skip_channels[i - 1] * (2 if self.deep else 1) if i >= 1 else 0)
      self.dec_a[i] = ConvNormAct(width, c, 3, **cna)
      self.dec_b[i] = ConvNormAct(c, c, 1, **cna)
      cin = c
    self.out = ConvSame(cin, 3, 1)

  @property
  def multiple(self) -> int:
    return 2 ** len(self.channels)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] blurred -> [N, 3, H, W] restored ``b + r`` (float32)."""
    n, _, h, w = x.shape
    m = self.multiple
    ph, pw = -h % m, -w % m
    b = x.float()
    if ph or pw:
      b = F.pad(b, (0, pw, 0, ph), mode="reflect" if (ph < h and pw < w) else "replicate")
    h_ = b
    pool = F.avg_pool2d if self.pool == "avg" else F.max_pool2d
    skips = []
    levels = len(self.channels)
    for i in range(levels):
      h_ = pool(self.down[i](h_), 2)
      if i == levels - 1:
        break
      s = self.shallow[i](h_)
      h_ = self.res[i](self.body[i](h_))
      d = self.deep_convs[i](h_) if self.deep else None
      skips.append((s, d))
    for i in reversed(range(levels)):
      h_ = F.leaky_relu(self.up_norm[i](self.up[i](h_)), self.slope)
      if i >= 1:
        s, d = skips[i - 1]
        h_ = torch.cat([h_, s] + ([d] if d is not None else []), dim=1)
      h_ = self.dec_b[i](self.dec_a[i](h_))
    y = b + self.out(h_).float()
    return y[:, :, :h, :w]


class Critic(nn.Module):
  """``biskip_jax.nn.models.Critic`` (DeblurGAN's PatchGAN WGAN critic) in PyTorch; [N] scores."""

  def __init__(self, features: int = 64, num_layers: int = 3, norm: str = "instance",
               conditional: bool = False, act_slope: float = 0.2, norm_affine: bool = False):
    super().__init__()
    self.conditional, self.slope = conditional, act_slope
    self.convs = nn.ModuleList([ConvSame(6 if conditional else 3, features, 4, 2)])
    self.norms = nn.ModuleList()
    cin = features
    for k in range(1, num_layers + 1):
      cout = features * min(2 ** k, 8)
      self.convs.append(ConvSame(cin, cout, 4, 2 if k < num_layers else 1))
      self.norms.append(nn.InstanceNorm2d(cout, eps=1e-6, affine=norm_affine)
                        if norm == "instance" else _norm(norm, cout, 0.9))
      cin = cout
    self.out = ConvSame(cin, 1, 4, 1)

  def forward(self, x: torch.Tensor, blurred: torch.Tensor | None = None) -> torch.Tensor:
    if self.conditional:
      x = torch.cat([x, blurred], dim=1)
    h = F.leaky_relu(self.convs[0](x), self.slope)
    for conv, norm in zip(self.convs[1:], self.norms):
      h = F.leaky_relu(norm(conv(h)), self.slope)
    return self.out(h).float().mean(dim=(1, 2, 3))


def vgg19_features(up_to_index: int = 14) -> nn.Sequential:
  """torchvision's ``vgg19().features[:up_to_index + 1]`` built by hand (random weights).

  Index 14 is conv3_3 before its ReLU, the perceptual layer of the paper's setup.
  """
  layers: list[nn.Module] = []
  cin = 3
  for c in _VGG19_CFG:
    if c == "M":
      layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    else:
      layers += [nn.Conv2d(cin, c, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
      cin = c
  return nn.Sequential(*layers[:up_to_index + 1])


def vgg_state_dict(features: nn.Sequential) -> dict[str, np.ndarray]:
  """The module's weights in torchvision's layout (``features.N.weight``) as NumPy arrays."""
  return {f"features.{k}": v.detach().cpu().numpy() for k, v in features.state_dict().items()}


# --- Porting Flax parameters into the PyTorch modules. ---

def _t(a: Any) -> torch.Tensor:
  return torch.from_numpy(np.array(a, dtype=np.float32))


def _port_conv(conv: nn.Conv2d, p: Mapping[str, Any]) -> None:
  conv.weight.data.copy_(_t(p["kernel"]).permute(3, 2, 0, 1))  # HWIO -> OIHW.
  conv.bias.data.copy_(_t(p["bias"]))


def _port_norm(norm: nn.Module, params: Mapping[str, Any] | None,
               stats: Mapping[str, Any] | None) -> None:
  if isinstance(norm, nn.Identity) or params is None:
    return
  (inner,) = params.keys()  # "bn" or "in".
  norm.weight.data.copy_(_t(params[inner]["scale"]))
  norm.bias.data.copy_(_t(params[inner]["bias"]))
  if isinstance(norm, nn.BatchNorm2d) and stats is not None:
    norm.running_mean.copy_(_t(stats[inner]["mean"]))
    norm.running_var.copy_(_t(stats[inner]["var"]))


def _port_cna(module: ConvNormAct, params: Mapping[str, Any], stats: Mapping[str, Any]) -> None:
  _port_conv(module.conv.conv, params["conv"])
  _port_norm(module.norm, params.get("norm"), stats.get("norm"))


def port_generator(model: BiSkip, variables: Mapping[str, Any]) -> BiSkip:
  """Copies Flax ``{"params", "batch_stats"}`` of ``models.BiSkip`` into ``model`` (in place)."""
  p, s = variables["params"], variables.get("batch_stats", {})
  levels = len(model.channels)
  with torch.no_grad():
    for i in range(levels):
      _port_cna(model.down[i], p[f"down{i}"], s.get(f"down{i}", {}))
      if i < levels - 1:
        _port_conv(model.shallow[i].conv, p[f"shallow{i}"])
        _port_cna(model.body[i], p[f"body{i}"], s.get(f"body{i}", {}))
        for k, block in enumerate(model.res[i]):
          name = f"res{i}_{k}"
          for j, (conv, norm) in enumerate(zip(block.convs, block.norms)):
            _port_conv(conv.conv, p[name][f"conv{j}"])
            _port_norm(norm, p[name].get(f"norm{j}"), s.get(name, {}).get(f"norm{j}"))
        if model.deep:
          _port_conv(model.deep_convs[i].conv, p[f"deep{i}"])
      # Transposed conv: XLA correlates the dilated input with the kernel as is; PyTorch's
      # transposed conv uses it flipped, with in/out swapped: HWIO -> IOHW, flipped in H, W.
      up = model.up[i].conv
      up.weight.copy_(_t(p[f"up{i}"]["kernel"]).flip(0, 1).permute(2, 3, 0, 1))
      up.bias.copy_(_t(p[f"up{i}"]["bias"]))
      _port_norm(model.up_norm[i], p.get(f"up{i}_norm"), s.get(f"up{i}_norm"))
      _port_cna(model.dec_a[i], p[f"dec{i}_a"], s.get(f"dec{i}_a", {}))
      _port_cna(model.dec_b[i], p[f"dec{i}_b"], s.get(f"dec{i}_b", {}))
    _port_conv(model.out.conv, p["out"])
  return model


def port_critic(model: Critic, variables: Mapping[str, Any]) -> Critic:
  """Copies Flax ``{"params"}`` of ``models.Critic`` into ``model`` (in place)."""
  p = variables["params"]
  with torch.no_grad():
    for k, conv in enumerate(model.convs):
      _port_conv(conv.conv, p[f"conv{k}"])
    for k, norm in enumerate(model.norms, start=1):
      _port_norm(norm, p.get(f"norm{k}"), None)
    _port_conv(model.out.conv, p["out"])
  return model


def generator_from_config(model_config: Any) -> BiSkip:
  """The PyTorch generator for ``config.model`` (as ``models.generator_from_config``)."""
  return BiSkip(model_config.variant, tuple(model_config.channels),
                tuple(model_config.skip_channels), model_config.num_res_blocks,
                model_config.norm, model_config.pool, model_config.act_slope,
                model_config.bn_momentum)


def critic_from_config(critic_config: Any) -> Critic:
  """The PyTorch critic for ``config.critic``."""
  return Critic(critic_config.features, critic_config.num_layers, critic_config.norm,
                critic_config.conditional, norm_affine=critic_config.norm_affine)


# --- Losses and the train step (biskip_jax.objective.losses / train_step). ---

def spl_weights(losses: torch.Tensor, lam: float, q: float) -> torch.Tensor:
  """Eq. 11: ``(1 − l/λ)^(1/(q−1))`` where ``l < λ``, else 0 (λ = ∞ gives 1)."""
  if math.isinf(lam):
    return torch.ones_like(losses)
  ratio = (losses / lam).clamp(min=0.0)
  active = ratio < 1.0
  v = torch.exp(torch.log1p(-torch.where(active, ratio, torch.zeros_like(ratio)))
                / max(q - 1.0, 1e-12))
  return torch.where(active, v, torch.zeros_like(v))


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor,
                     alpha: torch.Tensor, blurred: torch.Tensor | None) -> torch.Tensor:
  """Eq. 7 per sample, ``(‖∇D(x̂_i)‖_2 − 1)^2`` with ``x̂ = α x + (1 − α) x̃``; [N]."""
  x_hat = (alpha.view(-1, 1, 1, 1) * real + (1.0 - alpha.view(-1, 1, 1, 1)) * fake)
  x_hat.requires_grad_(True)
  scores = critic(x_hat, blurred)
  (grads,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
  sq = grads.float().pow(2).flatten(1).sum(1)
  return (torch.sqrt(sq + 1e-12) - 1.0) ** 2


class Trainer:
  """The train step of ``biskip_jax.train.train_step`` (Algorithm 1, lines 5–10) in PyTorch.

  Args:
    generator, critic: the networks (ported from Flax for a like-for-like comparison).
    vgg: VGG19 features up to the perceptual layer, or None without the P term.
    loss: ``config.loss`` (adversarial, pixel, perceptual, self_paced, γ1, γ2, β, vgg_input).
    n_critic: critic updates per generator update.
    g_lr, d_lr, betas: Adam settings.
  """

  def __init__(self, generator: BiSkip, critic: Critic, vgg: nn.Module | None, loss: Any,
               n_critic: int, g_lr: float = 1e-4, d_lr: float = 1e-4,
               betas: tuple[float, float] = (0.5, 0.999)):
    self.g, self.d, self.vgg, self.loss, self.n_critic = generator, critic, vgg, loss, n_critic
    self.g_opt = torch.optim.Adam(generator.parameters(), lr=g_lr, betas=betas, eps=1e-8)
    self.d_opt = torch.optim.Adam(critic.parameters(), lr=d_lr, betas=betas, eps=1e-8)
    if vgg is not None:
      for p in vgg.parameters():
        p.requires_grad_(False)
    self.lam, self.q = math.inf, 2.0

  def _features(self, images: torch.Tensor) -> torch.Tensor:
    if self.loss.vgg_input == "imagenet":
      mean = torch.tensor(_IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
      std = torch.tensor(_IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
      images = ((images + 1) / 2 - mean) / std
    return self.vgg(images).float()

  def content(self, restored: torch.Tensor, sharp: torch.Tensor,
              sharp_features: torch.Tensor | None) -> torch.Tensor:
    """Per-sample bi-level loss of eq. 4, ``γ1 p_i + γ2 f_i``; [N]."""
    lc = self.loss
    d = restored - sharp
    if lc.pixel == "l1":
      pixel = d.abs().flatten(1).mean(1)
    elif lc.pixel == "l2":
      pixel = d.pow(2).flatten(1).mean(1)
    else:
      pixel = torch.zeros(restored.shape[0], device=restored.device)
    feature = torch.zeros_like(pixel)
    if lc.perceptual:
      feature = (self._features(restored) - sharp_features).pow(2).flatten(1).mean(1)
    return lc.gamma1 * pixel + lc.gamma2 * feature

  def step(self, blur_u8: torch.Tensor, sharp_u8: torch.Tensor,
           alphas: Sequence[torch.Tensor] | None = None) -> dict[str, float]:
    """One step on uint8 NCHW batches; returns the losses (forces a device sync)."""
    lc = self.loss
    b = blur_u8.float() / 127.5 - 1.0
    x = sharp_u8.float() / 127.5 - 1.0
    n = x.shape[0]
    self.g.train()
    restored = self.g(b)
    sharp_features = None
    if lc.perceptual:
      with torch.no_grad():
        sharp_features = self._features(x)
    content = self.content(restored, x, sharp_features)
    v = spl_weights(content.detach(), self.lam, self.q) if lc.self_paced else torch.ones_like(
        content)
    fake = restored.detach()
    cond = b if self.d.conditional else None
    d_loss = torch.zeros(())
    if lc.adversarial:
      for p in self.d.parameters():
        p.requires_grad_(True)
      for k in range(self.n_critic):
        alpha = alphas[k] if alphas is not None else torch.rand(n, device=x.device)
        d_real, d_fake = self.d(x, cond), self.d(fake, cond)
        gp = gradient_penalty(self.d, x, fake, alpha, cond)
        d_loss = (v * (d_fake - d_real)).mean() + lc.gp_weight * (v * gp).mean()
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_opt.step()
      for p in self.d.parameters():
        p.requires_grad_(False)
    g_loss = (v * content).mean()
    if lc.adversarial:
      g_loss = g_loss - (v * self.d(restored, cond)).mean()
    self.g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    self.g_opt.step()
    return dict(g_loss=g_loss.detach(), d_loss=d_loss.detach())
