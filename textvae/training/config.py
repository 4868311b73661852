"""The recipe's training sections: ``objective``, ``optim`` and ``train``.

Each key's type and value rule are declared on its field (:mod:`textvae.schema`); rules
across keys are ``validate_<key>`` methods.
"""


from typing import Literal

from textvae.schema import ANY, at_least, count, each, field, in_interval, path_field, section

KLSchedule = Literal["constant", "linear", "cyclical"]
FreeBitsMode = Literal["dim", "total", "sentence"]


@section("objective")
class ObjectiveConfig:
    """How the model's raw terms (log-likelihood, KL per dimension) become the loss."""

    RETIRED = {  # unannotated: a class constant, not a key (schema.drop_retired)
        "lipschitz_start": (None, "it lost its ablation (MI 1.63 vs 2.90 without, benchmarks/latent/TABLE.md); "
                                  "L is model.lipschitz from the first step: drop the key"),
        "lipschitz_warmup_steps": (ANY, "it was the warm-up of the retired objective.lipschitz_start: drop the key"),
    }
    beta: float = field(at_least(0), default=1.0)
    kl_schedule: KLSchedule = "constant"
    """``constant`` (weight ``beta``), ``linear`` (He et al. 2019 warm-up from ``kl_start``) or
    ``cyclical`` (Fu et al. 2019)."""
    kl_start: float = field(at_least(0), default=0.0)
    kl_warmup_steps: int = field(count(0), default=0)
    kl_cycles: int = field(count(1), default=4)
    kl_cycle_ratio: float = field(in_interval(0.0, 1.0, open_low=True), default=0.5)
    """Share of each cycle over which the weight rises from 0 to ``beta``."""
    kl_cycle_zero_ratio: float = field(in_interval(0.0, 1.0, open_high=True), default=0.0)
    """Share of each cycle, before the rise, at weight 0 (Optimus: 0.5, with ``kl_cycle_ratio`` 0.25)."""
    kl_cycle_steps: int | None = field(count(1), default=None)
    """Total steps the cycles span; defaults to the run's total steps."""
    free_bits: float = field(at_least(0), default=0.0)
    """Nats; 0 disables free bits. Optimus's KL threshold lambda per dimension of each sentence is
    ``free_bits_mode: sentence`` with ``free_bits`` = lambda * d."""
    free_bits_mode: FreeBitsMode = "dim"
    """``dim`` (Kingma et al. 2016, per dimension), ``total`` (a batch-level target rate) or
    ``sentence`` (Li et al. 2019's ``fb=2``: ``free_bits / d`` per dimension of every sentence)."""
    target_rate: float | None = field(at_least(0), default=None)
    """Nats per sentence the code should carry: the KL term becomes ``|KL - target_rate|``
    (the controlled capacity of Burgess et al. 2018), weighted by the KL weight, so the
    batch-mean KL is held at the target from both sides. Free bits are a floor of the same
    kind and cannot be combined with it. Pair it with ``mmd_weight`` so the rate it holds is
    information about the sentence, not a shift of every code."""
    mmd_weight: float = field(at_least(0), default=0.0)
    """Weight of an MMD term between the batch's codes z ~ q(z|x) and as many draws of the
    prior (InfoVAE, Zhao et al. 2017): it pulls the aggregate posterior q(z) to N(0, I), so
    that KL = MI + KL(q(z) || p(z)) is spent on MI. Nats per sentence per unit of MMD^2
    (typical: 100 to 1000); 0 disables."""
    mmd_kernel: Literal["imq", "rbf"] = "imq"
    """The MMD's kernel: inverse multiquadric ``C / (C + |x - y|^2)`` with ``C = 2 d`` (WAE,
    Tolstikhin et al. 2018; heavy tails keep gradients for codes far from the prior), or the
    Gaussian ``exp(-|x - y|^2 / (2 d))``."""
    word_dropout: float = field(in_interval(0.0, 1.0), default=0.0)
    """Probability of replacing a decoder input token by ``<unk>`` (Bowman et al. 2016)."""
    pretrain_steps: int = field(count(0), default=0)
    """Li et al. (2019) phase 1: the first N steps train an autoencoder (KL weight 0); then the
    decoder is re-initialised, the optimiser restarted, and the KL schedule starts from
    its step 0. 0 disables."""

    def validate_target_rate(self) -> None:
        if self.target_rate is not None and self.free_bits > 0:
            raise ValueError("cannot be combined with objective.free_bits (a floor of the same kind): set one of them")

    def validate_kl_cycle_zero_ratio(self) -> None:
        if self.kl_cycle_zero_ratio + self.kl_cycle_ratio > 1.0:
            raise ValueError(f"kl_cycle_zero_ratio + kl_cycle_ratio must be <= 1, got "
                             f"{self.kl_cycle_zero_ratio} + {self.kl_cycle_ratio}")


@section("optim")
class OptimConfig:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = field(at_least(0), default=1e-3)
    weight_decay: float = field(at_least(0), default=0.0)
    momentum: float = field(at_least(0), default=0.0)
    betas: tuple[float, float] = field(each(in_interval(0.0, 1.0, open_high=True)), default=(0.9, 0.999))
    grad_clip: float = field(at_least(0), default=5.0)
    """Global gradient-norm clip; 0 disables."""
    scheduler: Literal["constant", "plateau", "cosine"] = "constant"
    """``plateau``: He et al. 2019, decay on validation stalls."""
    warmup_steps: int = field(count(0), default=0)
    plateau_factor: float = field(in_interval(0.0, 1.0, open_low=True), default=0.5)
    plateau_patience: int = field(count(0), default=2)
    min_lr: float = field(at_least(0), default=0.0)

    def validate_min_lr(self) -> None:
        if self.min_lr > self.lr:
            raise ValueError(f"must be in [0, optim.lr], got {self.min_lr}")


@section("train")
class TrainConfig:
    epochs: int = field(count(1), default=10)
    max_steps: int | None = field(count(1), default=None)
    """Stop after this many optimiser steps (overrides ``epochs``)."""
    grad_accum: int = field(count(1), default=1)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """``auto``: bf16 on GPU, none on CPU (bf16 autocast crashes ``nn.LSTM`` there)."""
    eval_every: int = field(count(0), default=0)
    """Validate every N steps; 0 means once an epoch."""
    eval_batches: int | None = field(count(1), default=None)
    """Cap the validation batches (quick runs)."""
    bn_statistics_batches: int = field(count(0), default=50)
    """With BN on the posterior means (``model.posterior_bn_gamma``): before each validation and
    export, measure its statistics over this many training batches instead of trusting the
    running averages, which lag a fast-moving encoder (precise BN); 0 keeps the running averages."""
    save_every: int = field(count(0), default=0)
    """Write a resumable checkpoint every N steps; 0 means at every validation."""
    keep_last: int = field(count(0), default=2)
    early_stopping: int = field(count(0), default=0)
    """Stop after N validations without a better ELBO; 0 disables."""
    log_every: int = field(count(1), default=20)
    tensorboard: bool = False
    resume: str = path_field("checkpoint", "no")
    """``no``, ``auto`` (the newest intact checkpoint of the run directory) or a checkpoint path."""
    resume_inexact: bool = False
    """Accept a resume that cannot continue exactly as the uninterrupted run would (a checkpoint
    without its RNG, optimiser or schedule state, another number of processes, other data or
    recipe values); the log says what differs. Without it such a resume is refused."""
    overwrite: bool = False
    """Start afresh in an ``output_dir`` that holds an earlier run, deleting that run first."""
    progress: bool = True
    gradient_checkpointing: bool = False
    """Recompute the Transformer blocks' activations in the backward pass instead of keeping
    them (``gradient_checkpointing_enable()``): less memory, about a third more compute."""
    fsdp: bool = False
    """Shard weights, gradients and optimiser state over the processes (Accelerate's FSDP
    with its default plugin; GPUs only). ``accelerate launch --use_fsdp`` does the same."""
    state_cache: bool = True
    """With a frozen pretrained decoder whose states do not depend on z (``invlip``, ``none``),
    compute them once per corpus and read them from a memory-mapped cache in every epoch."""
    state_cache_dir: str | None = path_field("output", None)
    """The cache root the states go to (default: ``data.cache_dir``, else ``$TEXTVAE_CACHE``, else
    ``~/.cache/textvae``), as entries of kind ``lm-states``."""
    compile: bool = False
    """``torch.compile`` the prepared model (inductor): the first steps compile, later ones run faster."""
    aggressive: bool = False
    """He et al. (2019) aggressive inference-network training: before each decoder step the
    encoder alone is updated on fresh batches until the loss stops improving; switched off at
    the first validation whose mutual information I(x; z) is not above the previous one."""
    aggressive_max_inner_steps: int = field(count(1), default=100)
    """Cap on the encoder-only steps before one decoder step (He et al. loop while ``sub_iter < 100``:
    at most 99)."""
    aggressive_check_every: int = field(count(1), default=15)
    """Encoder steps per window of the stopping rule: the loop stops when a window's loss per
    token is not below the previous window's (He et al.: 15)."""
