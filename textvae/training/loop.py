"""The training loop. Read :func:`train` top to bottom, then :func:`_train`: :func:`set_up` (data,
model, loaders, objective, optimiser), :func:`resume`, and :func:`train_loop`, whose iteration is
:func:`train_step`, :func:`log_step`, :func:`validate_and_export` and a checkpoint.

Accelerate is the distributed engine (DDP/FSDP/DeepSpeed come from ``accelerate
launch``); this module owns the loop: batches, the objective, validation, the best
export and resumable checkpoints. Every process builds the same length-bucketed
batches and takes its own share (see :class:`~textvae.data.batching.BucketBatchSampler`),
so each sentence is seen once per epoch across processes and resuming needs only
(epoch, batch index) plus the RNG states that ``save_state`` keeps.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, FullyShardedDataParallelPlugin
from accelerate.utils import (
    DistributedType,
    is_tensorboard_available,
    parse_flag_from_env,
    set_seed,
)
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from textvae.atomic import ensure_directory, write_text
from textvae.data.batching import Features, make_dataloader
from textvae.data.pipeline import PreparedData, prepare_data
from textvae.data.tokenization import DECODER_TOKENIZER, KINDS, META_FILE
from textvae.errors import TextVAEError
from textvae.estimators import active_units_from_sums, latent_warning, mutual_information
from textvae.evaluation.metrics import LikelihoodTotals
from textvae.models import TextVAEModel
from textvae.models.configuration_textvae import ModelConfig
from textvae.models.integrity import record_tokenizer
from textvae.training.aggressive import (
    AggressiveInference,
    encoder_parameters,
    encoder_updates,
    step_except,
)
from textvae.training.builders import build_model, build_optimizer, pretrained_tokenizer
from textvae.training.checkpointing import (
    TrainState,
    save_checkpoint,
    state_files,
    write_atomic_export,
)
from textvae.training.config import TrainConfig
from textvae.training.objectives import Objective
from textvae.training.recipe import Recipe, dump_recipe
from textvae.training.resume import (
    ResumePoint,
    accept_differences,
    choose_checkpoint,
    claim_run_directory,
    data_fingerprint,
    differences,
    load_checkpoint,
    prepare_run_directory,
    run_identity,
    saved_nothing,
    set_aside,
    undone_on_failure,
    warn,
)
from textvae.training.schedules import LRSchedule
from textvae.training.state_cache import can_cache, open_or_build
from textvae.training.step_totals import StepTotals

# torch.compile's backend for train.compile (the tests swap in a quick one).
COMPILE_BACKEND = "inductor"


def make_accelerator(cfg: TrainConfig, run_dir: Path, model: ModelConfig | None = None) -> Accelerator:
    """The Accelerator for ``cfg``; settings this machine cannot run are refused in one line."""
    fsdp = cfg.fsdp or parse_flag_from_env("ACCELERATE_USE_FSDP")
    if fsdp and not torch.cuda.is_available():
        raise TextVAEError(f"{'recipe key ' + repr('train.fsdp') if cfg.fsdp else 'accelerate launch --use_fsdp'}: FSDP needs "
                           "CUDA GPUs (Accelerate runs it on GPUs only; on CPU it would silently fall back to DDP "
                           "or fail), and none is available: launch without FSDP for DDP")
    if cfg.tensorboard and not is_tensorboard_available():
        raise TextVAEError("recipe key 'train.tensorboard': true, but tensorboard is not installed (pip install tensorboard)")
    precision = cfg.mixed_precision
    if precision == "auto":  # bf16 autocast crashes nn.LSTM on CPU; fp16 is ignored there
        precision = "bf16" if torch.cuda.is_available() else "no"
    if precision != "no" and not torch.cuda.is_available() and model is not None:
        lstm = "lstm" in (model.encoder_type, model.decoder_type)
        if precision == "fp16" or lstm:
            why = ("fp16 autocast does nothing on a CPU" if precision == "fp16"
                   else "bf16 autocast crashes nn.LSTM on a CPU (oneDNN has no bf16 LSTM primitive)")
            raise TextVAEError(f"recipe key 'train.mixed_precision': {precision}, but {why} and no GPU is "
                               "available: use auto or no")
    return Accelerator(
        mixed_precision=precision,
        log_with="tensorboard" if cfg.tensorboard else None,
        project_dir=str(run_dir),
        fsdp_plugin=FullyShardedDataParallelPlugin() if cfg.fsdp else None,
    )


def load_run_data(recipe: Recipe, run_dir: Path, accelerator: Accelerator, resuming: bool) -> PreparedData:
    """Corpus and tokenizer.

    A fresh run's main process trains the tokenizer and saves it in the run directory;
    the other processes, and a resumed run, load that one.
    """
    tokenizer_dir = run_dir / "tokenizer"
    if resuming and recipe.data.tokenizer in (*KINDS, DECODER_TOKENIZER) and not tokenizer_dir.is_dir():
        raise TextVAEError(f"output_dir {run_dir} has no tokenizer/ to resume with (the one the checkpoint's model was "
                           "trained with): resume in the output_dir of the run that wrote the checkpoint")
    with accelerator.main_process_first():
        cfg = recipe.data
        made_here = cfg.tokenizer in (*KINDS, DECODER_TOKENIZER)
        if (resuming or not accelerator.is_main_process) and made_here:
            cfg = dataclasses.replace(cfg, tokenizer=str(tokenizer_dir))
        given = pretrained_tokenizer(recipe) if cfg.tokenizer == DECODER_TOKENIZER else None
        return prepare_data(cfg, tokenizer_dir=tokenizer_dir, splits=("train", "valid"), tokenizer=given,
                            progress=recipe.train.progress and accelerator.is_main_process)


def batch_stream(loader: DataLoader, state: TrainState, device: torch.device) -> Iterator[tuple[dict, bool]]:
    """Endless batches from ``(state.epoch, state.batch_in_epoch)`` on; flags an epoch's last batch.

    ``state`` always points at the next batch to read, so a checkpoint taken between
    two optimiser steps resumes at exactly the right place.
    """
    sampler = loader.batch_sampler
    while True:
        sampler.set_epoch(state.epoch, start_batch=state.batch_in_epoch)
        for batch in loader:
            state.batch_in_epoch += 1
            last = state.batch_in_epoch == sampler.batches_per_epoch
            if last:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}, last


class StepBatches:
    """Draws one optimiser step's micro-batches from the stream; remembers whether an epoch ended."""

    def __init__(self, stream: Iterator[tuple[dict, bool]], count: int) -> None:
        self.stream, self.count, self.epoch_ended = stream, count, False

    def __call__(self) -> list[dict]:
        drawn = [next(self.stream) for _ in range(self.count)]
        self.epoch_ended |= any(last for _, last in drawn)
        return [batch for batch, _ in drawn]


def accumulate_gradients(model: torch.nn.Module, objective: Objective, batches: list[dict], step: int,
                         accelerator: Accelerator) -> StepTotals:
    """Forward and backward over one optimiser step's micro-batches (gradients averaged over them).

    Returns the sums of every micro-batch's terms on this process (see :class:`StepTotals`).
    """
    totals = StepTotals(accelerator.device)
    for micro, batch in enumerate(batches):
        sync = micro == len(batches) - 1
        with (nullcontext() if sync else accelerator.no_sync(model)), accelerator.autocast():
            terms = objective(model(**batch, word_dropout=objective.word_dropout), step)
        accelerator.backward(terms.loss / len(batches))
        totals.add(terms)
    return totals


def restart_decoder(model: TextVAEModel, optimizer: torch.optim.Optimizer, schedule: LRSchedule,
                    state: TrainState) -> None:
    """Li et al. (2019) phase 2: a fresh decoder and optimiser on the autoencoder's encoder.

    Every module outside the posterior is re-initialised as a new model's would be; the
    optimiser forgets its moments (Li et al. start phase 2 with new optimisers), and the
    best-ELBO, early-stopping and plateau bookkeeping starts over: an autoencoder's ELBO
    is not comparable with a VAE's.
    """
    encoder = {id(module) for module in model.posterior.modules()}
    for module in model.modules():
        if id(module) not in encoder:
            model._init_weights(module)
    optimizer.state.clear()
    schedule.restart()
    state.best_elbo, state.bad_validations = float("-inf"), 0


@torch.no_grad()
def validate(
    model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, max_batches: int | None, seed: int
) -> dict[str, float]:
    """ELBO, reconstruction, KL, mutual information and active units on the validation split (all processes).

    ``mi`` is He et al. (2019)'s ``calc_mi``: q(z) from each validation batch, averaged over
    the batches (:func:`~textvae.estimators.mutual_information` with ``batch_mi``); it is
    what switches the aggressive phase off. ``mi_split`` forms q(z) from every validated
    sentence (capped at log of their number); the KL-without-MI warning reads it. Runs on
    a forked RNG with a fixed seed: validation numbers are reproducible and validating
    never changes the training trajectory (exact resume depends on it).
    """
    model.eval()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    sums = torch.zeros(4, dtype=torch.float64, device=accelerator.device)  # rec, kl, tokens, sentences
    mu_sum = mu_sq_sum = None
    posteriors = []
    mi_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        loader.batch_sampler.set_epoch(0)
        for index, batch in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.autocast():
                out = model(**batch)
            sums += torch.stack([-out.rec_log_likelihood.sum(), out.kl.sum(), out.num_tokens.sum(), torch.tensor(len(out.kl))]).double()
            mu = out.mu.double()
            mu_sum = mu.sum(0) if mu_sum is None else mu_sum + mu.sum(0)
            mu_sq_sum = mu.pow(2).sum(0) if mu_sq_sum is None else mu_sq_sum + mu.pow(2).sum(0)
            posteriors.append(torch.cat([mu, out.logvar.double()], dim=-1))
            mi_sum += mutual_information(out.mu, out.logvar, batch_mi=True, batch_size=len(mu)) * len(mu)
    sums = accelerator.reduce(sums, reduction="sum")
    mu_sum, mu_sq_sum = accelerator.reduce(mu_sum, "sum"), accelerator.reduce(mu_sq_sum, "sum")
    mi_sum = accelerator.reduce(mi_sum, "sum")
    # Every process's rows in rank order (their counts may differ): gathered as objects, as evaluation does.
    parts = accelerator.gather_for_metrics([torch.cat(posteriors).cpu()], use_gather_object=True)
    posteriors = torch.cat(parts).to(accelerator.device)
    model.train()
    rec, kl, tokens, count = sums.tolist()
    likelihood = LikelihoodTotals(rec, kl, int(tokens), int(count)).numbers()
    mu, logvar = posteriors.chunk(2, dim=-1)
    metrics = {
        "elbo": likelihood["elbo"],
        "rec": likelihood["rec"],
        "kl": likelihood["kl"],
        "mi": float(mi_sum) / count,
        "mi_split": mutual_information(mu, logvar, generator=torch.Generator(device=mu.device).manual_seed(seed)),
        "elbo_ppl": likelihood["ppl_elbo"],
        "active_units": active_units_from_sums(mu_sum, mu_sq_sum, int(count))[0],
    }
    if accelerator.unwrap_model(model).has_latent:
        warning = latent_warning(metrics["kl"], metrics["mi_split"], metrics["active_units"], int(count))
        if warning:
            metrics["warning"] = warning
    return metrics


class MetricsLog:
    """metrics.jsonl in the run directory (main process), mirrored to Accelerate's trackers."""

    def __init__(self, path: Path, accelerator: Accelerator) -> None:
        self.path, self.accelerator = path, accelerator

    def truncate_after(self, step: int) -> None:
        """Forget records past ``step``: a resumed run logs the steps after its checkpoint again.

        A last line cut short by the kill that ended the earlier run is dropped too.
        """
        if not (self.accelerator.is_main_process and self.path.exists()):
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record["step"] <= step:
                kept.append(line + "\n")
        write_text(self.path, "".join(kept))

    def write(self, record: dict) -> None:
        if self.accelerator.is_main_process:
            try:
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
            except OSError as exc:  # a full disk: the checkpoints written so far are intact
                raise TextVAEError(f"{self.path}: cannot write ({exc.strerror})") from None
        numbers = {f"{record['split']}/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        self.accelerator.log(numbers, step=record["step"])


def export(model: torch.nn.Module, accelerator: Accelerator, run_dir: Path, recipe: Recipe, summary: dict) -> None:
    """Write ``final/``: config, weights, tokenizer, the resolved recipe and the metrics so far.

    Every process calls this: the weights come from ``accelerator.get_state_dict``, which
    gathers them when the prepared model holds only a shard (FSDP, DeepSpeed ZeRO-3); the
    main process writes them.
    """
    state_dict = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return
    dump_recipe(recipe, run_dir / "recipe.yaml")
    metrics = run_dir / "metrics.jsonl"
    tokenizer_meta = run_dir / "tokenizer" / META_FILE  # which corpus the tokenizer came from
    write_atomic_export(
        accelerator.unwrap_model(model, keep_torch_compile=False),
        run_dir / "final",
        {
            "recipe.yaml": (run_dir / "recipe.yaml").read_text(encoding="utf-8"),
            "train_summary.json": json.dumps(summary, indent=2),
            "metrics.jsonl": metrics.read_text(encoding="utf-8") if metrics.exists() else "",
            **({META_FILE: tokenizer_meta.read_text(encoding="utf-8")} if tokenizer_meta.is_file() else {}),
        },
        state_dict,
    )


def state_cache_features(model: TextVAEModel, data: PreparedData, recipe: Recipe,
                         accelerator: Accelerator) -> dict[str, Features]:
    """Per split, the batches' cached decoder states (:mod:`~textvae.training.state_cache`),
    when the decoder is a frozen LM that z does not enter; else nothing. The main process
    builds a missing cache while the others wait, then every process memory-maps it."""
    if not (recipe.train.state_cache and can_cache(model, recipe.objective.word_dropout)):
        return {}
    model.to(accelerator.device)
    root = recipe.train.state_cache_dir or recipe.data.cache_dir
    features = {}
    with accelerator.main_process_first():
        for split in ("train", "valid"):
            cache = open_or_build(model, data.splits[split].ids, split, root, batch_size=recipe.data.batch_size,
                                  progress=recipe.train.progress and accelerator.is_main_process)
            accelerator.print(f"{split}: decoder states {'computed into' if cache.built else 'read from'} {cache.directory}")
            features[split] = cache.features
    return features


def export_untrained(model: TextVAEModel, valid_loader: DataLoader, accelerator: Accelerator, run_dir: Path,
                     recipe: Recipe) -> Path:
    """Nothing trains (a frozen LM with ``latent_path: none``): validate it once and export it
    as it is, so that it is evaluated and shared like any trained model."""
    accelerator.print("nothing to train (no parameter requires a gradient): exporting the model as it is")
    model = accelerator.prepare(model)
    metrics = validate(model, valid_loader, accelerator, recipe.train.eval_batches, recipe.seed)
    MetricsLog(run_dir / "metrics.jsonl", accelerator).write({"step": 0, "epoch": 0, "split": "valid", **metrics})
    summary = {"best_step": 0, "valid": metrics, "steps": 0, "wall_time_s": 0.0, "processes": accelerator.num_processes}
    export(model, accelerator, run_dir, recipe, summary)
    accelerator.wait_for_everyone()
    accelerator.print(f"model exported to {run_dir / 'final'}")
    return run_dir


def train(recipe: Recipe) -> Path:
    """Train the model a recipe describes; returns the run directory (export in ``final/``)."""
    recipe.check()  # a bad value fails here, before anything is read or written
    run_dir = Path(recipe.output_dir)
    accelerator = make_accelerator(recipe.train, run_dir, recipe.model)
    created = not run_dir.exists()
    ensure_directory(run_dir, "output_dir")
    if recipe.train.state_cache_dir is not None:  # named by the user: a mistake even where no cache is built
        ensure_directory(recipe.train.state_cache_dir, "train.state_cache_dir")
    with claim_run_directory(run_dir, accelerator):
        point = choose_checkpoint(run_dir, recipe.train.resume, recipe.train.overwrite, recipe.train.resume_inexact)
        accelerator.wait_for_everyone()  # every process has looked before the main one clears
        # A resume of a run killed before it saved anything starts it again: its leftovers go.
        restart = point is None and recipe.train.resume == "auto" and saved_nothing(run_dir)
        if accelerator.is_main_process:
            prepare_run_directory(run_dir, fresh=point is None, overwrite=recipe.train.overwrite or restart)
        _train(recipe, accelerator, run_dir, point, created)
    return run_dir


@dataclass
class Run:
    """Everything one training holds: what :func:`set_up` built, read by the steps after it."""

    recipe: Recipe
    accelerator: Accelerator
    run_dir: Path
    data: PreparedData
    model: torch.nn.Module
    """As prepared by Accelerate (and compiled with ``train.compile``)."""
    raw_model: TextVAEModel
    objective: Objective
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    train_loader: DataLoader
    valid_loader: DataLoader
    total_steps: int
    aggressive: AggressiveInference
    log: MetricsLog
    state: TrainState = field(default_factory=TrainState)
    statistics_loader: DataLoader | None = None
    """Training batches that BN's statistics are measured on before each validation (None: no BN)."""
    saved: dict[str, Any] = field(init=False)
    """The states kept as JSON in each checkpoint's manifest (never pickled), the aggressive switch only when used."""
    identity: dict[str, Any] = field(init=False)
    """What a resume must match: the resolved recipe and a fingerprint of the training data."""

    def __post_init__(self) -> None:
        self.saved = {"lr_schedule": self.schedule, **({"aggressive": self.aggressive} if self.aggressive.enabled else {})}
        self.identity = run_identity(self.recipe.to_dict(), data_fingerprint(self.data.splits))


def _train(recipe: Recipe, accelerator: Accelerator, run_dir: Path, point: ResumePoint | None, created: bool) -> None:
    """Set up, resume, then the loop: step, log, validate and export, checkpoint."""
    with undone_on_failure(run_dir, point is None, created, accelerator):
        set_seed(recipe.seed)
        run = set_up(recipe, accelerator, run_dir, resuming=point is not None)
        if run is None:  # nothing trains: exported as it is
            return
        if point is not None:
            resume(run, point)
        if recipe.train.tensorboard:
            accelerator.init_trackers("tensorboard")
        if accelerator.is_main_process:
            dump_recipe(recipe, run_dir / "recipe.yaml")
    train_loop(run)


def set_up(recipe: Recipe, accelerator: Accelerator, run_dir: Path, resuming: bool) -> Run | None:
    """Data, model, loaders, objective and optimiser, prepared by Accelerate; None (after exporting
    the model as it is) when no parameter trains."""
    cfg = recipe.train
    data = load_run_data(recipe, run_dir, accelerator, resuming)
    if accelerator.is_main_process:
        for split in data.splits.values():
            print(split.report.summary())
    model = build_model(recipe, data.tokenizer)
    record_tokenizer(model.config, data.tokenizer, data.corpus_name)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    trainable = any(p.requires_grad for p in model.parameters())
    train_loader, valid_loader = make_loaders(recipe, data, model if trainable else None, accelerator)
    if not trainable:
        export_untrained(model, valid_loader, accelerator, run_dir, recipe)
        return None
    steps_per_epoch = max(1, train_loader.batch_sampler.batches_per_epoch // cfg.grad_accum)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    objective = Objective.from_config(recipe.objective, total_steps)
    optimizer = build_optimizer(recipe.optim, model)
    schedule = LRSchedule(recipe.optim, optimizer, total_steps)
    prepared, optimizer = accelerator.prepare(model, optimizer)
    if cfg.compile:  # after prepare, so it compiles the wrapped (DDP) model; Accelerate unwraps it again
        prepared = torch.compile(prepared, backend=COMPILE_BACKEND)
    return Run(recipe, accelerator, run_dir, data, prepared, accelerator.unwrap_model(prepared, keep_torch_compile=False),
               objective, optimizer, schedule, train_loader, valid_loader, total_steps,
               AggressiveInference(cfg.aggressive), MetricsLog(run_dir / "metrics.jsonl", accelerator),
               statistics_loader=statistics_loader(recipe, data, accelerator))


def make_loaders(recipe: Recipe, data: PreparedData, model: TextVAEModel | None,
                 accelerator: Accelerator) -> tuple[DataLoader, DataLoader]:
    """This process's share of the length-bucketed train and valid batches, with the frozen LM's
    cached states when ``model`` (None: nothing trains) can use them."""
    features = state_cache_features(model, data, recipe, accelerator) if model is not None else {}
    # Both shuffled (valid always in epoch 0's order): train.eval_batches then validates on a
    # fixed random sample, not on the shortest sentences.
    return tuple(bucketed_loader(recipe, data, accelerator, split, recipe.seed, features.get(split))
                 for split in ("train", "valid"))


def bucketed_loader(recipe: Recipe, data: PreparedData, accelerator: Accelerator, split: str, seed: int,
                    features: Features | None = None) -> DataLoader:
    """This process's share of ``split`` in shuffled, length-bucketed batches of the recipe's size."""
    return make_dataloader(data.splits[split].ids, recipe.data.batch_size, data.tokenizer.pad_token_id, shuffle=True,
                           seed=seed, bucket_batches=recipe.data.bucket_batches, num_replicas=accelerator.num_processes,
                           rank=accelerator.process_index, features=features)


def statistics_loader(recipe: Recipe, data: PreparedData, accelerator: Accelerator) -> DataLoader | None:
    """Training batches of this process, drawn as training draws them (the same bucketing, so the
    same batch statistics), in an order of their own: BN's statistics are measured on them."""
    if recipe.model.posterior_bn_gamma is None or recipe.train.bn_statistics_batches == 0:
        return None
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        warn(accelerator, "train.bn_statistics_batches: the encoder is sharded over the processes, so BN's "
                          "statistics stay the running averages")
        return None
    return bucketed_loader(recipe, data, accelerator, "train", recipe.seed + 1)


def refresh_posterior_statistics(run: Run) -> None:
    """BN's statistics measured afresh before a validation (see
    :meth:`~textvae.models.TextVAEModel.recompute_posterior_statistics`), averaged over the processes.
    The same batches every time: validations stay reproducible and a resume exact."""
    loader, accelerator = run.statistics_loader, run.accelerator
    if loader is None:
        return
    loader.batch_sampler.set_epoch(0)
    batches = ((b["input_ids"].to(accelerator.device), b["attention_mask"].to(accelerator.device))
               for b in itertools.islice(loader, run.recipe.train.bn_statistics_batches))
    if run.raw_model.recompute_posterior_statistics(batches) and accelerator.num_processes > 1:
        for buffer in run.raw_model.posterior.mu_norm.buffers():
            buffer.copy_(accelerator.reduce(buffer, reduction="mean"))


def resume(run: Run, point: ResumePoint) -> None:
    """Continue from checkpoint ``point``: what differs from the run that wrote it is accepted or
    refused (``train.resume_inexact``), then every state is loaded and the log cut back to it."""
    accelerator = run.accelerator
    inexact, notes, fresh = differences(point, run.identity, accelerator.num_processes, state_files(accelerator),
                                        run.saved)
    accept_differences(point, inexact, notes, run.recipe.train.resume_inexact, accelerator)
    set_aside(point, accelerator)
    load_checkpoint(accelerator, run.run_dir, point, fresh, run.state, run.saved, run.optimizer)
    run.log.truncate_after(run.state.step)
    accelerator.print(f"resumed from {point.path} at step {run.state.step}")


def train_loop(run: Run) -> None:
    """One iteration = one optimiser step over ``grad_accum`` micro-batches, then its log line, a
    validation (with the best export) when one is due, and a checkpoint when one is due."""
    cfg, accelerator, state = run.recipe.train, run.accelerator, run.state
    draw = StepBatches(batch_stream(run.train_loader, state, accelerator.device), cfg.grad_accum)
    # Training mode for every module: a pretrained backbone comes out of from_pretrained in eval
    # mode, and would otherwise train without its dropout until the first validation.
    run.model.train()
    progress = tqdm(total=run.total_steps, initial=state.step, desc="train", dynamic_ncols=True,
                    disable=not (cfg.progress and accelerator.is_main_process))
    started, throughput = time.time(), Throughput()
    stop = state.step >= run.total_steps
    while not stop:
        if run.objective.starts_vae_phase(state.step):
            restart_decoder(run.raw_model, run.optimizer, run.schedule, state)
        draw.epoch_ended = False
        totals, grad_norm, encoder_steps = train_step(run, draw)
        throughput.tokens += totals.loss_and_tokens()[1]
        progress.update(1)
        if state.step % cfg.log_every == 0 or state.step == run.total_steps:
            log_step(run, totals, grad_norm, encoder_steps, throughput, progress)
        stop = state.step >= run.total_steps
        validate_now = stop or (draw.epoch_ended if cfg.eval_every == 0 else state.step % cfg.eval_every == 0)
        if validate_now:
            stop |= validate_and_export(run, started)
        # After validation: an early stop is saved too.
        if stop or (validate_now if cfg.save_every == 0 else state.step % cfg.save_every == 0):
            save_checkpoint(accelerator, run.run_dir, state, cfg.keep_last, run.identity, run.saved)
    progress.close()
    accelerator.end_training()
    accelerator.print(f"model exported to {run.run_dir / 'final'}")


def train_step(run: Run, draw: StepBatches) -> tuple[StepTotals, torch.Tensor, int]:
    """One optimiser step (after He et al.'s encoder updates while the aggressive phase lasts);
    returns the step's totals, its gradient norm and how many encoder steps came first."""
    accelerator, state, model = run.accelerator, run.state, run.model
    clip = run.recipe.optim.grad_clip if run.recipe.optim.grad_clip > 0 else math.inf

    def backward(micro_batches: list[dict]) -> StepTotals:  # at the current step
        return accumulate_gradients(model, run.objective, micro_batches, state.step, accelerator)

    def clip_and_step(frozen: list[torch.nn.Parameter]) -> None:
        accelerator.clip_grad_norm_(model.parameters(), clip)
        step_except(run.optimizer, frozen)

    batches = draw()
    encoder_steps = 0
    if run.aggressive.active:  # He et al.: the encoder catches up before the decoder steps
        encoder_steps = encoder_updates(run.raw_model, lambda b: backward(b).loss_and_tokens(), batches, draw,
                                        clip_and_step, run.recipe.train.aggressive_max_inner_steps,
                                        run.recipe.train.aggressive_check_every,
                                        skip_decoder_gradients=accelerator.num_processes == 1)
    totals = backward(batches)
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), clip)
    # The same verdict on every process (gradients are all-reduced). Under fp16 an
    # infinite gradient is an overflow the loss scaler skips, so only the loss counts.
    if not torch.isfinite(grad_norm if accelerator.scaler is None else totals.loss(accelerator)):
        raise TextVAEError(
            f"non-finite loss/gradient at step {state.step + 1} (loss={float(totals.sums[0] / totals.sums[5]):.4g} "
            f"per sentence); nothing was saved from this step, the last checkpoint in {run.run_dir / 'checkpoints'} "
            "is intact (try a lower optim.lr or optim.grad_clip)")
    step_except(run.optimizer, encoder_parameters(run.raw_model) if run.aggressive.active else [])
    if not accelerator.optimizer_step_was_skipped:  # an fp16 overflow: no update, so no LR step
        run.schedule.step()
    state.step += 1
    state.tokens_seen += totals.loss_and_tokens()[1]
    return totals, grad_norm, encoder_steps


@dataclass
class Throughput:
    """Tokens since the last log line, and when it was written."""

    tokens: int = 0
    since: float = field(default_factory=time.time)


def log_step(run: Run, totals: StepTotals, grad_norm: torch.Tensor, encoder_steps: int, throughput: Throughput,
             progress: tqdm) -> None:
    """The train record of this step in metrics.jsonl (and the trackers), and the progress bar's figures."""
    accelerator, now = run.accelerator, time.time()
    record = {"step": run.state.step, "epoch": run.state.epoch, "split": "train", **totals.record(accelerator),
              "lr": run.optimizer.param_groups[0]["lr"], "grad_norm": float(grad_norm),
              "tokens_per_s": throughput.tokens * accelerator.num_processes / max(now - throughput.since, 1e-9)}
    if run.aggressive.enabled:
        record.update(aggressive=float(run.aggressive.active), encoder_steps=encoder_steps)
    if run.objective.target_rate is not None:  # beside "kl", the rate reached
        record["rate_target"] = run.objective.target_rate
    run.log.write(record)
    progress.set_postfix(loss=f"{record['loss']:.2f}", kl=f"{record['kl']:.2f}",
                         ppl=f"{record['elbo_ppl']:.1f}", tok_s=f"{record['tokens_per_s']:.0f}")
    throughput.tokens, throughput.since = 0, now


def validate_and_export(run: Run, started: float) -> bool:
    """Validate, export the model when it is the best so far, and say whether early stopping ends the run."""
    cfg, accelerator, state = run.recipe.train, run.accelerator, run.state
    refresh_posterior_statistics(run)
    metrics = validate(run.model, run.valid_loader, accelerator, cfg.eval_batches, run.recipe.seed)
    run.log.write({"step": state.step, "epoch": state.epoch, "split": "valid", **metrics})
    if "warning" in metrics:
        accelerator.print(f"warning: step {state.step}: {metrics['warning']}")
    run.aggressive.validation(metrics["mi"])
    stop = False
    if not run.objective.pretraining(state.step - 1):  # an autoencoder is neither exported nor judged by its ELBO
        # Judged at the objective's final KL weight: the ELBO when it is 1 (every VAE recipe),
        # the reconstruction alone for an autoencoder (beta = 0), whose ELBO only falls.
        score = -(metrics["rec"] + run.objective.kl_weight(run.total_steps) * metrics["kl"])
        run.schedule.validation(-score)
        if score > state.best_elbo:
            state.best_elbo, state.bad_validations = score, 0
            summary = {"best_step": state.step, "valid": metrics, "steps": run.total_steps,
                       "wall_time_s": time.time() - started, "processes": accelerator.num_processes}
            export(run.model, accelerator, run.run_dir, run.recipe, summary)
        else:
            state.bad_validations += 1
            stop = cfg.early_stopping > 0 and state.bad_validations >= cfg.early_stopping
    accelerator.wait_for_everyone()
    return stop
