"""Every config field, declared once with its comment and its default: the paper's setup.

``get_config(scheme)`` is the training configuration of the Bi-Skip paper (§4–5) on GoPro for
one of Table 1's schemes (``biskip_jax.objective.schemes.TABLE1``): the scheme sets the loss
switches in ``config.loss`` and the generator variant in ``config.model``. ``configs/biskip.py`` is
this config; the other files in ``configs/`` change some of its values, never add fields.
``config_checks.upgrade`` fills the fields an older stored ``config.json`` lacks from here.
"""

import ml_collections

from biskip_jax.objective import schemes


def get_config(scheme: str = "SA1P-BS") -> ml_collections.ConfigDict:
  """Returns the paper's configuration for training scheme ``scheme``."""
  s = schemes.parse_scheme(scheme or "SA1P-BS")
  config = ml_collections.ConfigDict()
  config.scheme = s.name  # Table 1 name; informational, the switches below are what counts.
  # PRNG implementation for jax.random.key: "rbg" compiles parameter init ~5x faster than
  # "threefry2x32" on CPU; both are deterministic for a seed.
  config.rng_impl = "rbg"

  # Generator (DESIGN §2, paper §4.1, Fig. 5).
  config.model = m = ml_collections.ConfigDict()
  m.variant = s.variant  # "S" | "BS-w/o-R" | "BS-cR" | "BS" (Table 1).
  m.channels = (32, 64, 128, 128, 128)  # Encoder/decoder channels per level.
  m.skip_channels = (16, 32, 64, 64)  # Shallow and deep skip channels per level.
  m.num_res_blocks = 3  # ResBlocks per level in the body ("3 x Resblocks").
  m.norm = "batch"  # "batch" | "instance" | "none".
  m.act_slope = 0.2  # LeakyReLU negative slope.
  m.pool = "avg"  # "avg" | "max" down-sampling.
  m.bn_momentum = 0.9  # Batch-norm running-average momentum.
  m.zero_residual = False  # Zero-init the last conv (G starts as identity); paper: Xavier.
  # Inference compute dtype (validation, evaluate.py, deblur.py): "float32" | "bfloat16";
  # params stay float32. Training uses train.compute_dtype instead.
  m.dtype = "float32"

  # Critic (DESIGN §3): DeblurGAN's 70x70 PatchGAN, WGAN, no sigmoid.
  config.critic = c = ml_collections.ConfigDict()
  c.features = 64  # Channels of the first conv; doubled per stride-2 layer up to 8x.
  c.num_layers = 3  # Stride-2 convs, the first included (DeblurGAN's n_layers; 3: 70x70).
  c.norm = "instance"  # "instance" | "none" (never batch norm under a gradient penalty).
  c.norm_affine = False  # Scale and bias after instance norm (DeblurGAN: affine=False).
  c.conditional = False  # Concatenate the blurred input to the critic's input.

  # Losses (DESIGN §4, paper eq. 3–7, 12–13).
  config.loss = l = ml_collections.ConfigDict()
  l.adversarial = s.adversarial  # WGAN-GP terms on/off (scheme letter A).
  l.pixel = s.pixel  # "l1" | "l2" | "none" (scheme letters 1 | 2).
  l.perceptual = s.perceptual  # VGG19 feature loss on/off (scheme letter P).
  l.self_paced = s.self_paced  # Self-paced weights v_i (scheme letter S); off => v_i = 1.
  l.gamma1 = 100.0  # γ1, weight of the pixel term (paper §5).
  l.gamma2 = 0.1  # γ2, weight of the feature term (paper §5).
  l.gp_weight = 10.0  # β, weight of the gradient penalty (eq. 7).
  # Weight of the adversarial term −mean v_i D(x̃_i) in the generator loss (eq. 13: 1). A
  # fresh critic's image gradient has norm about 1 per sample, spread over every pixel, which
  # at 256x256 outweighs γ1 = 100 times a pixel mean; below 1 when a critic joins a
  # warm-started generator late in training.
  l.gamma_adv = 1.0
  # Weight of a frequency term added to l_i: mean |FFT(x̃) − FFT(x)| over real and imaginary
  # parts (MIMO-UNet's frequency reconstruction loss, Cho et al. 2021: 0.1 of its L1 weight).
  # Not in the paper (0): it penalises lost high frequencies that L1 alone lets blur.
  l.gamma_fft = 0.0
  l.vgg_layer = "conv3_3"  # VGG19 layer F (before its ReLU).
  l.vgg_input = "imagenet"  # "imagenet": map [-1,1] to ImageNet-normalised RGB; "raw": as is.
  l.vgg_weights = ""  # Local torchvision vgg19 .pth/.npz; "" downloads and caches it.

  # Optimisation (paper §5, DESIGN §6).
  config.optim = o = ml_collections.ConfigDict()
  o.g_lr = 1e-4  # Generator Adam learning rate.
  o.d_lr = 1e-4  # Critic Adam learning rate.
  o.b1 = 0.5  # Adam β1.
  o.b2 = 0.999  # Adam β2.
  o.decay_start = 0.5  # Fraction of training after which the lr decays linearly to zero.

  # Training loop (Algorithm 1).
  config.train = t = ml_collections.ConfigDict()
  t.seed = 0  # Base PRNG seed: parameter init, crops, GP interpolation, data order.
  t.batch_size = 1  # Global batch size (paper: 1), split over all devices.
  t.num_epochs = 300  # T of eq. 10 (baselines 300, final model 1000).
  t.steps_per_epoch = -1  # -1: one pass over the training set per epoch.
  t.num_steps = -1  # > 0 overrides num_epochs * steps_per_epoch (short runs).
  t.n_critic = 2  # Critic updates per generator update (D:G = 2:1).
  # Train-step compute dtype of generator, critic and VGG19: "float32" | "bfloat16" (mixed
  # precision for GPUs: params, optimizer state, batch statistics and losses stay float32).
  t.compute_dtype = "float32"
  t.log_every = 100  # Steps between progress lines / scalar logs.
  t.image_every = 2000  # Steps between image summaries in TensorBoard.
  t.checkpoint_every = 2000  # Steps between checkpoints.
  # > 0: also a checkpoint when this many seconds have passed since the last (runs on machines
  # lent for minutes). One process only: processes would not agree on the step.
  t.checkpoint_every_secs = 0
  t.keep_checkpoints = 3  # Latest checkpoints kept (plus the best by validation PSNR).
  t.eval_every = 0  # Steps between validation runs; 0 disables validation.
  t.eval_num_images = 16  # Validation images (from data.eval_split) per run.
  # Also validate with each of those pairs' sharp image as the input (eval/sharp_input_psnr
  # and its lowest image, eval/sharp_input_psnr_min): a model should give a sharp photo back
  # unchanged, and one that learned a bias of its training blur shows it there first.
  t.eval_sharp_input = False
  t.max_bad_steps = 10  # Consecutive non-finite steps tolerated before stopping.
  # Multi-host runs: steps between the processes' checks for a stop (SIGTERM/Ctrl-C to any
  # of them); each check is a host sync. A signal stops every process at the next check.
  t.stop_check_every = 10
  t.profile = False  # Capture a jax.profiler trace of train.profile_steps in WORKDIR/profile.
  t.profile_steps = (10, 15)  # Steps [first, last) traced (0-based; after the compilation).
  # Warm start of a new run's generator (ignored on resume): "" (random init, the paper),
  # "pretrained[:NAME]" (a shipped model) or a training run / checkpoint path. The model
  # section must match the source's; the critic and both optimizers start fresh.
  t.init_from = ""

  # Data (DESIGN §7).
  config.data = d = ml_collections.ConfigDict()
  d.source = "gopro"  # "gopro" | "folder" | "synthetic" | "kohler" | "frames" | "mix".
  d.path = "data/GOPRO_Large"  # Root of the dataset for gopro/folder/kohler.
  d.blur_kind = "blur"  # GoPro input frames: "blur" | "blur_gamma".
  d.train_split = "train"
  d.eval_split = "test"
  d.crop_size = 256  # Random paired crop (paper: 256x256).
  d.random_flip = True  # Random horizontal/vertical flips of training crops.
  # Random transposes too (with the flips: all 8 rotations and reflections, BasicSR's
  # augmentation): a horizontal motion becomes a vertical one. Off by default so that seeds
  # give the crops they gave before.
  d.random_transpose = False
  d.small_images = "error"  # Images smaller than the crop: "error" | "pad" (reflect).
  d.num_workers = 2  # grain worker processes (0: in-process).
  d.prefetch = 4  # Batches prefetched per worker.
  d.cache_decoded = False  # Keep decoded frames in memory (fast, needs RAM).
  d.max_bad_fraction = 0.5  # Stop if more than this fraction of files fail to read.
  d.cache_max_mb = 2048  # Bound of each worker's data.cache_decoded LRU cache (MiB).
  d.crops_per_image = 1  # Training crops per decoded pair (> 1: fewer decodes, less variety).
  d.gopro_format = "folder"  # GoPro read as "folder" (PNGs in data.path) | "tfds" (array_record).
  d.tfds_data_dir = ""  # TFDS data_dir for gopro_format="tfds"; "" = ~/tensorflow_datasets.
  # data.source = "mix": training records drawn from these sources in proportion to their
  # weights (0: unused; each source reads its own section below), evaluation on all of their
  # evaluation pairs one after another.
  d.mix = ml_collections.ConfigDict(dict(gopro=0.0, folder=0.0, synthetic=0.0, frames=0.0))
  # Real blur from consecutive video frames (used by data.source = "frames"): the mean of a
  # window of frames in linear light against its middle frame, as GoPro's pairs were made.
  d.frames = fr = ml_collections.ConfigDict()
  fr.path = ""  # A folder of consecutive frames, or of one subfolder per sequence.
  fr.window = (7, 13)  # Frames averaged per training pair, drawn from [lo, hi] (GoPro: 7-13).
  # Odd window lengths only: the sharp target, the middle frame, is then the window's centre in
  # time; an even window's middle frame is half a frame late, a shift the model would learn.
  fr.odd_windows = True
  fr.curve = "gamma"  # Display -> linear light: "gamma" (x^gamma, as GoPro) | "srgb".
  fr.gamma = 2.2  # Exponent of the "gamma" curve.
  # Fraction [a, b) of every sequence held out: no training window touches these frames;
  # the evaluation pairs are consecutive windows of eval_window frames inside them.
  fr.eval_range = (0.85, 1.0)
  fr.eval_window = 11  # Frames averaged per evaluation pair.
  fr.num_eval = 4  # Most evaluation pairs (spread over the held-out frames); 0: all.
  fr.eval_max_size = 0  # > 0: evaluation pairs are their centre window of this size.
  fr.num_train = 10_000  # Records (random windows) in one training epoch.
  fr.cache_mb = 1024  # Decoded frames kept per data worker (MiB; 1280x720 frames: 2.6 each).
  # Training crops downscaled by s ~ U(lo, hi) in (0, 1] (a window of crop_size / s pixels
  # resized to crop_size): the motion of a few sequences at several magnitudes. (1, 1): off.
  fr.scale_range = (1.0, 1.0)
  # Light and colour of training crops (never of evaluation pairs), in linear light before the
  # window is averaged, blurred and sharp alike, each frame clipped at white as a sensor
  # saturates: an exposure gain drawn per crop from U(lo, hi) ((1, 1): off), and per-channel
  # white-balance gains exp(u_c), u_c ~ U(-w, w) less their mean (0: off). A few sequences'
  # light and colour then vary as other scenes' would.
  fr.exposure_range = (1.0, 1.0)
  fr.white_balance = 0.0
  # Synthetic blur (used by data.source = "synthetic").
  d.synthetic = sy = ml_collections.ConfigDict()
  sy.images = "skimage"  # "skimage" (shipped photos) or a folder of sharp images.
  sy.holdout = ("coffee", "rocket")  # skimage photos kept for evaluation only.
  sy.kernel_size = 31  # Blur kernel support (pixels).
  sy.max_shake = 0.005  # Trajectory anxiety (Boracchi & Foi 2012), drawn as U(0.1, 1) x this.
  # > 0: the anxiety drawn log-uniformly from [min_shake, max_shake] instead, for more nearly
  # straight paths: a video camera's motion over one frame time bends less than most shakes
  # drawn up to 0.005 (python -m experiments.blur_extents prints both paths' bends).
  sy.min_shake = 0.0
  # Trajectory path length, as a fraction of kernel_size - 1, drawn per kernel from this range.
  sy.length_range = (0.15, 1.0)
  # Shutter-open fraction of the trajectory, drawn per kernel (DeblurGAN's exposure); the blur
  # shrinks with it. (1.0, 1.0): the whole trajectory (and no extra random draw).
  sy.exposure_range = (1.0, 1.0)
  sy.noise_std = 0.01  # Gaussian noise std in [0,1] units, added after blurring.
  # > noise_std: the std is drawn per record from U(noise_std, noise_std_max); else fixed.
  sy.noise_std_max = 0.0
  sy.jpeg_prob = 0.0  # Probability that the (noisy) input is JPEG-compressed.
  sy.jpeg_quality = (60, 95)  # JPEG quality range [lo, hi], drawn uniformly per record.
  # Share of training records whose input is the sharp crop itself (noise/JPEG still apply):
  # teaches the model to leave sharp images alone. Evaluation records are always blurred.
  sy.sharp_prob = 0.0
  # Per-record downscale of the sharp photo, drawn from [lo, hi] <= 1 (Lanczos): varies blur
  # size against content size. (1.0, 1.0): original size.
  sy.scale_range = (1.0, 1.0)
  # > 0: evaluation pairs are the centre window of at most this size per side (fast eval on
  # large photos); 0: full-size evaluation images.
  sy.eval_max_size = 0
  sy.gamma = 2.2  # Blur applied in linear light: x^gamma, blur, ^(1/gamma).
  # > gamma: the exponent is drawn per record from U(gamma, gamma_max), for cameras whose tone
  # curve is not one known power (1 blurs the stored values: no brightening at edges).
  sy.gamma_max = 0.0
  # Clipped highlights: with this probability per record, near-white pixels (display >= 235,
  # ramping to 255) are brightened in linear light by a gain drawn from highlight_gain before
  # the blur and clipped at white after it, so lights smear into saturated streaks.
  sy.highlight_prob = 0.0
  sy.highlight_gain = (1.0, 1.0)
  # Sensor noise in linear light after the blur, variance shot * x + read^2, each drawn per
  # record from its [lo, hi] ((0, 0): none). Added before JPEG and before noise_std's.
  sy.shot_noise = (0.0, 0.0)
  sy.read_noise = (0.0, 0.0)
  # Share of blurred training records whose shake also rolls the camera about an axis drawn
  # over the photo (blur that varies over the image, as a hand's roll makes), the roll's span
  # drawn from U(0, max_roll) degrees (capped so it moves no pixel of a crop by more than half
  # kernel_size). Evaluation pairs are always uniform blur. 0: none.
  sy.roll_prob = 0.0
  sy.max_roll = 0.0
  # > 0: also hold out every holdout_every-th image of the folder's sorted list (from the
  # first), for folders too large to name the held-out images one by one.
  sy.holdout_every = 0
  sy.num_eval = 8  # Synthetic evaluation pairs.
  # Seed of the evaluation pairs' kernels, noise and JPEG, apart from train.seed: runs of any
  # training seed are scored on the same pairs, and evaluate.py --config=NAME (which replaces
  # a run's data section) draws NAME's pairs for any run.
  sy.eval_seed = 0
  sy.num_train = 512  # Records in one synthetic training epoch (image i % n, kernel seed i).

  # Evaluation and inference.
  config.eval = e = ml_collections.ConfigDict()
  e.tile_size = 0  # > 0: deblur in overlapping tiles of this size; 0: tile only if too large.
  e.max_pixels = 3840 * 2160  # With tile_size 0: images above this are tiled (1024 tiles).
  e.tile_overlap = 32  # Overlap between tiles (pixels), blended linearly.
  e.num_figures = 4  # Side-by-side figures written by evaluate.py.
  # deblur.py / full_resolution.Deblurrer reflect-pad H and W up to a multiple of this outside jit
  # (and crop back), so photos of mixed sizes share compiled programs; 0: no buckets (the
  # generator still pads to a multiple of 32). Must be 0 or a multiple of 32. 128 costs at most
  # 96 rows/columns beyond the generator's own padding (+4 % pixels at 720p, +6 % at 1080p,
  # 0 at 4K) while cutting the shapes of a 300-1500 px photo folder 16-fold. Padding changes
  # the result slightly (instance-norm statistics and borders): 54-60 dB PSNR between bucketed
  # and unbucketed outputs of the shipped model on real photos (docs/evaluation.md). evaluate.py
  # and training validation never bucket: their metrics are of the image at its own size.
  e.size_bucket = 128
  return config
