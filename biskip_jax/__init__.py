"""biskip-jax: a JAX/Flax reimplementation of Bi-Skip (Zhang et al., 2019).

Module map: what each module owns, and where the paper's equations live.

The method (paper §4):
  models          generator (Fig. 5: Skip / Bi-Skip paths, ResBlocks, global residual; Table 1
                  variants) and the WGAN critic (PatchGAN)
  conv            convolutions with fast XLA:CPU gradients (used by models)
  losses          eq. 3 (batch mean), eq. 4 (bi-level loss l_i: pixel + VGG19 feature),
                  eq. 5-7 (WGAN-GP: adversarial loss, gradient penalty), eq. 12 (critic),
                  eq. 13 (generator)
  vgg             VGG19 features F of eq. 4 (ImageNet weights, input normalisation)
  spl             self-paced learning: eq. 8-9 (regulariser), eq. 10 (q(t)), eq. 11 (v_i),
                  λ from the previous epoch (Algorithm 1, line 10)
  schemes         Table 1's scheme names (SA1P-BS, ...) -> loss switches and variant
  train_step      TrainState and the jitted step: Algorithm 1, lines 5-10 (eq. 4, 11-13)
Training:
  train_lib       train_and_evaluate: Algorithm 1 over epochs, resume, validation, signals
  checkpointing   orbax checkpoints (resume, best by PSNR, damaged ones skipped)
  writers         TensorBoard, metrics.jsonl and terminal writers; read_metrics
  periodic_actions  progress line (steps/s, ETA) and the jax.profiler window
  log_files       log files that survive a full disk
  config_defaults every config field, declared once with its comment and default
  config_checks   every settings check (ranges, names, devices), the upgrade of a stored
                  config onto today's fields, and WORKDIR/config.json
  workdir_lock    one train.py per workdir
  multihost       several processes in one run: launch, and what they agree on
Data:
  image_io        read / write / list images; uint8 <-> [-1, 1] (to_/from_model_range)
  datasets/       GoPro, Köhler, folder and synthetic pairs; collect_photos (real photos)
  blur            synthetic camera-shake kernels and blurring (DESIGN §7)
  input_pipeline  grain batches for training, ordered examples for evaluation
Evaluation and use (paper §6):
  metrics         PSNR, SSIM, Köhler's protocol (§6.1), image-signature saliency (§6.2)
  eval_lib        the evaluation protocol and metrics.json (evaluate.py)
  inference       Deblurrer: full-resolution (tiled) restoration; loading any --ckpt
  deblur_lib      the work behind deblur.py (photos; video: clips in and out)
  demo_lib        the local demo page (demo.py; Streamlit runs demo_page/page.py)
  export_lib      the generator as StableHLO or ONNX (export.py)
  pretrained      the shipped model: export and checksum-verified loading
  entry/, cli     the command-line programs' flags and main; errors: UserError
Elsewhere: configs/ (biskip.py: the paper's settings, i.e. config_defaults; quickstart.py,
pretrain.py, ablation.py, tiny.py), experiments/ (deep_prior.py: eq. 2 and Fig. 2/4;
ablation.py: Table 1, with ablation_report.py its tables, paired comparisons and curves;
plot_spl.py: eq. 9-11 over a run).

Modules are imported lazily so that ``import biskip_jax`` stays cheap.
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = ("models", "spl", "losses", "vgg", "metrics", "inference", "schemes", "blur",
           "input_pipeline", "train_step", "train_lib", "eval_lib", "image_io", "writers")


def __getattr__(name: str):
  if name in _PUBLIC:
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
