"""Training-step speed of the textvae latent paths against a plain PyTorch LSTM-VAE.

Every entry is one function that builds its model and optimiser and returns a closure doing
one full training step (forward, loss, backward, Adam step) on the shared batch. Entries
are timed in interleaved rounds (entry A step, entry B step, ...), so a machine whose
load drifts slows all of them alike and the ratios stay meaningful; warm-up steps are not
timed; the figure is the median of the timed steps.

    python benchmarks/speed.py                    # literature sizes, CPU (and CUDA if present)
    python benchmarks/speed.py --device cuda      # bf16 autocast on CUDA
    python benchmarks/speed.py --quick            # tiny sizes, a few seconds (smoke test)
    python benchmarks/speed.py --profile "textvae invlip (LSTM)"
    python benchmarks/speed.py --device cuda --iw-eval   # also IW-NLL (K = 500) over PTB test, timed

After the entries, the trainer itself (``textvae.training.train``: bucketed PTB batches,
the objective, Accelerate, logging) trains ``recipes/ptb/lstm-invlip.yaml`` at the same
sizes, batch size and precision for a few steps; its own tokens/s (from metrics.jsonl,
warm-up steps dropped) is compared with the plain reference's, and that ratio is printed
last (``--no-trainer`` skips it; ``--quick`` runs it on the embedded corpus).

``--iw-eval`` then times the IW-NLL evaluation (``evaluate_split``, what ``textvae evaluate``
does after loading, without the greedy decodes) of the same recipe's model, untrained, at the
same sizes over the whole PTB test split with K = ``--iw-samples``: its cost depends on the
sizes, K and the sentences, not on the weights (the greedy decodes do depend on them: an
untrained model never stops, so they are left out).

Adding an entry (say another latent path or decoder): write

    @entry("trainer step")
    def trainer_step(setup: Setup) -> Callable[[], None]:
        ...build once...
        def step():
            ...one unit of work on setup.input_ids / setup.attention_mask...
        return step

and it is timed, reported in tokens/s and comparable with the rest. An entry whose unit
is not a training step still reports predicted tokens of the shared batch per second.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Sizes:
    """Model and data sizes. The defaults are the PTB settings of Bowman et al. (2016),
    Kim et al. (2018) and He et al. (2019): embedding 512, LSTM 1024, latent 32, 10k vocab."""

    vocab_size: int = 10_000
    embedding_size: int = 512
    lstm_size: int = 1024
    latent_size: int = 32
    transformer_width: int = 512
    transformer_layers: int = 4
    transformer_heads: int = 8
    mean_length: float = 21.0  # PTB words per sentence; +1 EOS gives ~22 predicted tokens
    max_length: int = 50

    @classmethod
    def quick(cls) -> Sizes:
        return cls(vocab_size=200, embedding_size=16, lstm_size=32, latent_size=8,
                   transformer_width=32, transformer_layers=2, transformer_heads=2,
                   mean_length=8.0, max_length=16)


@dataclass
class Setup:
    """What every entry gets: sizes, device, the shared batch and how to wrap a forward."""

    sizes: Sizes
    device: torch.device
    input_ids: torch.Tensor  # (B, T) <bos> w.. <eos>, right-padded with 0
    attention_mask: torch.Tensor

    @property
    def num_tokens(self) -> int:
        """Predicted tokens per step (words + EOS), the unit of tokens/s."""
        return int(self.attention_mask[:, 1:].sum())

    def autocast(self):
        """bf16 autocast on CUDA; nothing on CPU (bf16 autocast crashes nn.LSTM there)."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def make_batch(sizes: Sizes, batch_size: int, device: torch.device, seed: int = 0):
    """PTB-like batch: lengths ~ N(mean, (mean/2)^2) clipped to [1, max_length] words."""
    generator = torch.Generator().manual_seed(seed)
    lengths = (torch.randn(batch_size, generator=generator) * sizes.mean_length / 2 + sizes.mean_length)
    lengths = lengths.round().clamp(1, sizes.max_length).long()
    width = int(lengths.max()) + 2
    ids = torch.zeros(batch_size, width, dtype=torch.long)
    mask = torch.zeros(batch_size, width, dtype=torch.long)
    for row, n in enumerate(lengths.tolist()):
        words = torch.randint(4, sizes.vocab_size, (n,), generator=generator)
        ids[row, : n + 2] = torch.cat([torch.tensor([1]), words, torch.tensor([2])])
        mask[row, : n + 2] = 1
    return ids.to(device), mask.to(device)


# ------------------------------------------------------------------------------ entries

ENTRIES: dict[str, Callable[[Setup], Callable[[], None]]] = {}
REFERENCE = "reference LSTM-VAE (plain PyTorch)"
TRAINER = "textvae trainer (invlip, LSTM)"  # measured by trainer_tokens_per_s, not an entry
IW_TARGET_S = 60.0  # IW-NLL with K = 500 over PTB test (3,761 sentences) on a GPU


def entry(name: str):
    """Register ``fn(setup) -> step`` under ``name``; entries run in registration order."""

    def register(fn):
        ENTRIES[name] = fn
        return fn

    return register


def _loss_fn():
    """textvae's own objective when it exists (beta = 1), else -rec + KL, mean over sentences."""
    try:
        from textvae.training.objectives import Objective
        from textvae.training.schedules import ConstantSchedule
    except ImportError:
        return lambda out: (out.kl - out.rec_log_likelihood).mean()
    objective = Objective(ConstantSchedule(1.0))
    return lambda out: objective(out, 0).loss


def textvae_step(setup: Setup, **options) -> Callable[[], None]:
    """One training step of a TextVAEModel built with ``options`` on top of the sizes."""
    from textvae.models import TextVAEConfig, TextVAEModel

    s = setup.sizes
    lstm = options.get("decoder_type", "lstm") == "lstm"
    config = TextVAEConfig(
        vocab_size=s.vocab_size,
        embedding_size=s.embedding_size,
        hidden_size=s.lstm_size if lstm else s.transformer_width,
        latent_size=s.latent_size,
        decoder_layers=1 if lstm else s.transformer_layers,
        num_attention_heads=s.transformer_heads,
        max_position_embeddings=max(64, s.max_length + 2),
        **options,
    )
    model = TextVAEModel(config).to(setup.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_of = _loss_fn()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with setup.autocast():
            out = model(setup.input_ids, setup.attention_mask)
        loss_of(out).backward()
        optimizer.step()

    step.model = model  # for --profile and the parameter count
    return step


@entry("textvae none (LSTM)")
def textvae_lstm_none(setup: Setup):
    return textvae_step(setup, latent_path="none")


@entry("textvae concat (LSTM)")
def textvae_lstm_concat(setup: Setup):
    return textvae_step(setup, latent_path="concat")


@entry("textvae invlip (LSTM)")
def textvae_lstm_invlip(setup: Setup):
    return textvae_step(setup, latent_path="invlip")


@entry("textvae invlip (Transformer)")
def textvae_transformer_invlip(setup: Setup):
    return textvae_step(setup, latent_path="invlip", decoder_type="transformer")


class ReferenceLSTMVAE(nn.Module):
    """The textbook LSTM-VAE (Bowman et al. 2016 / He et al. 2019) in plain PyTorch.

    embedding -> LSTM encoder (padded batch, last real state gathered) -> Gaussian ->
    LSTM decoder with z concatenated to every input and c_0 = W z, h_0 = tanh(c_0) ->
    linear -> softmax cross-entropy. cuDNN's LSTM on CUDA, the fused one on CPU.
    """

    def __init__(self, s: Sizes):
        super().__init__()
        self.embed = nn.Embedding(s.vocab_size, s.embedding_size, padding_idx=0)
        self.encoder = nn.LSTM(s.embedding_size, s.lstm_size, batch_first=True)
        self.to_params = nn.Linear(s.lstm_size, 2 * s.latent_size)
        self.init_state = nn.Linear(s.latent_size, s.lstm_size)
        self.decoder = nn.LSTM(s.embedding_size + s.latent_size, s.lstm_size, batch_first=True)
        self.output = nn.Linear(s.lstm_size, s.vocab_size)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states, _ = self.encoder(self.embed(ids))
        last = states[torch.arange(ids.shape[0], device=ids.device), mask.sum(1) - 1]
        mu, logvar = self.to_params(last).chunk(2, dim=-1)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        c0 = self.init_state(z).unsqueeze(0)
        inputs = self.embed(ids[:, :-1])
        inputs = torch.cat([inputs, z.unsqueeze(1).expand(-1, inputs.shape[1], -1).to(inputs.dtype)], dim=-1)
        hidden, _ = self.decoder(inputs, (torch.tanh(c0), c0))
        logits = self.output(hidden).float()
        nll = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), ignore_index=0, reduction="sum")
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum()
        return (nll + kl) / ids.shape[0]


@entry(REFERENCE)
def reference_lstm_vae(setup: Setup):
    model = ReferenceLSTMVAE(setup.sizes).to(setup.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with setup.autocast():
            loss = model(setup.input_ids, setup.attention_mask)
        loss.backward()
        optimizer.step()

    step.model = model
    return step


# ------------------------------------------------------------------------------ trainer

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "ptb" / "lstm-invlip.yaml"


def recipe_overrides(sizes: Sizes, quick: bool) -> list[str]:
    """``RECIPE`` at ``sizes``: the trainer and the IW-NLL timing build the entries' model."""
    overrides = [f"model.embedding_size={sizes.embedding_size}", f"model.hidden_size={sizes.lstm_size}",
                 f"model.latent_size={sizes.latent_size}", f"data.vocab_size={sizes.vocab_size}"]
    if quick:
        overrides += ["data.corpus=synthetic", "data.max_train_lines=2000", "model.invlip_state_size=8",
                      "model.icnn_hidden_size=16"]
    return overrides


def trainer_tokens_per_s(sizes: Sizes, device: torch.device, batch_size: int, steps: int, warmup: int,
                         quick: bool) -> float:
    """Median tokens/s of ``steps`` logged trainer steps after ``warmup`` (PTB, or the embedded corpus)."""
    import os
    import tempfile
    from unittest import mock

    from accelerate.state import AcceleratorState

    from textvae.training.loop import train
    from textvae.training.recipe import load_recipe

    total = warmup + steps
    overrides = [
        *recipe_overrides(sizes, quick), f"data.batch_size={batch_size}", f"train.max_steps={total}",
        "train.log_every=1", f"train.eval_every={total}", "train.eval_batches=1", "train.progress=false",
        f"train.mixed_precision={'bf16' if device.type == 'cuda' else 'no'}",
    ]
    cpu_only = {"ACCELERATE_USE_CPU": "1"} if device.type == "cpu" else {}
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, cpu_only):
        run_dir = train(load_recipe(RECIPE, [*overrides, f"output_dir={tmp}/run"]))
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    AcceleratorState._reset_state(reset_partial_state=True)  # the next device gets its own state
    rates = [r["tokens_per_s"] for r in rows if r["split"] == "train" and r["step"] > warmup]
    return statistics.median(rates)


def iw_eval_seconds(sizes: Sizes, device: torch.device, iw_samples: int, max_sentences: int | None,
                    quick: bool) -> dict:
    """Wall time of the IW-NLL evaluation of ``RECIPE``'s model at ``sizes`` over the test split.

    Why untrained: the IW pass costs the same for any weights, and the table's trained models
    are evaluated by ``textvae evaluate`` anyway (their whole-command times are in the PTB
    table). The greedy decodes are left out: an untrained model decodes to the length limit.
    """
    from textvae.data.pipeline import prepare_data
    from textvae.evaluation.corpus import evaluate_split
    from textvae.training.builders import build_model
    from textvae.training.recipe import load_recipe

    recipe = load_recipe(RECIPE, recipe_overrides(sizes, quick))
    data = prepare_data(recipe.data, splits=("test",), progress=False)
    ids = data.splits["test"].ids
    if max_sentences:
        ids = [ids[i] for i in range(min(max_sentences, len(ids)))]
    model = build_model(recipe, data.tokenizer).to(device)
    _sync(device)
    start = time.perf_counter()
    results = evaluate_split(model, ids, iw_samples=iw_samples, bleu=False, progress=False).results
    _sync(device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "sentences": len(ids), "tokens": results["protocol"]["num_predicted_tokens"],
            "iw_samples": iw_samples, "corpus": recipe.data.corpus, "split": "test"}


# ------------------------------------------------------------------------------ timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(setup: Setup, names: list[str], warmup: int, steps: int) -> dict[str, dict]:
    """Build every entry, warm each up, then time ``steps`` interleaved rounds."""
    steppers = {name: ENTRIES[name](setup) for name in names}
    for step in steppers.values():
        for _ in range(warmup):
            step()
    _sync(setup.device)
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu_times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(steps):
        for name, step in steppers.items():
            _sync(setup.device)
            start, cpu_start = time.perf_counter(), time.process_time()
            step()
            _sync(setup.device)
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - cpu_start)
    results = {}
    for name, values in times.items():
        median = statistics.median(values)
        model = getattr(steppers[name], "model", None)
        results[name] = {
            "median_s": median,
            "min_s": min(values),
            "max_s": max(values),
            "cpu_median_s": statistics.median(cpu_times[name]),
            "tokens_per_s": setup.num_tokens / median,
            "parameters": sum(p.numel() for p in model.parameters()) if model is not None else None,
        }
    return results


def ratio_lines(results: dict[str, dict], cpu: bool = False) -> list[str]:
    """The two comparisons the issue asks for, as step-time ratios (higher = slower).

    On CPU the ratio of process CPU time is printed too: on a shared machine it is far less
    sensitive to other processes than wall time (both are medians over the same steps).
    """
    lines = []
    pairs = [
        ("textvae invlip (LSTM)", "textvae concat (LSTM)", "invlip / concat", 1.3),
        ("textvae concat (LSTM)", REFERENCE, "textvae concat / reference", None),
    ]
    for a, b, label, target in pairs:
        if a in results and b in results:
            ratio = results[a]["median_s"] / results[b]["median_s"]
            verdict = "" if target is None else f"  (target <= {target}: {'met' if ratio <= target else 'NOT met'})"
            extra = ""
            if cpu:
                extra = f"; CPU time {results[a]['cpu_median_s'] / results[b]['cpu_median_s']:.3f}x"
            lines.append(f"{label:<28} {ratio:6.3f}x step time{extra}{verdict}")
    return lines


def report(setup: Setup, results: dict[str, dict], args) -> str:
    device = setup.device
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    lines = [
        f"device {device} ({hardware}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{'bf16 autocast' if device.type == 'cuda' else 'float32'}",
        f"batch {setup.input_ids.shape[0]} sentences, {setup.num_tokens} predicted tokens "
        f"({setup.num_tokens / setup.input_ids.shape[0]:.1f}/sentence, padded to {setup.input_ids.shape[1] - 1}); "
        f"warm-up {args.warmup}, median of {args.steps} interleaved steps",
        f"{'entry':<36} {'tokens/s':>10} {'ms/step':>9} {'min..max ms':>17} {'CPU ms':>9} {'params':>8}",
    ]
    for name, r in results.items():
        params = f"{r['parameters'] / 1e6:.1f}M" if r["parameters"] else "-"
        spread = f"{r['min_s'] * 1e3:.0f}..{r['max_s'] * 1e3:.0f}"
        lines.append(
            f"{name:<36} {r['tokens_per_s']:>10.0f} {r['median_s'] * 1e3:>9.1f} {spread:>17} "
            f"{r['cpu_median_s'] * 1e3:>9.1f} {params:>8}"
        )
    lines += ratio_lines(results, cpu=device.type == "cpu")
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def profile(setup: Setup, name: str, steps: int = 3, rows: int = 25) -> str:
    """torch.profiler table of one entry's steps, by self time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    step = ENTRIES[name](setup)
    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if setup.device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        _sync(setup.device)
    key = "self_cuda_time_total" if setup.device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


# --------------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", action="append", help="cpu, cuda (repeatable; default: cpu, plus cuda when available)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per entry (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per entry first")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 steps: a smoke test in seconds")
    parser.add_argument("--only", action="append", help="run only these entries (repeatable)")
    parser.add_argument("--profile", metavar="ENTRY", help="print a torch.profiler table for ENTRY instead of timing")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--no-trainer", dest="trainer", action="store_false",
                        help="skip the trainer-vs-reference measurement")
    parser.add_argument("--iw-eval", action="store_true",
                        help="also time the IW-NLL evaluation of the trainer's model over the PTB test split")
    parser.add_argument("--iw-samples", type=int, default=500, help="K of --iw-eval (default: 500)")
    parser.add_argument("--iw-sentences", type=int, default=None,
                        help="--iw-eval on the first N test sentences only (default: all)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size = min(args.batch_size, 4)
        args.steps, args.warmup = min(args.steps, 2), min(args.warmup, 1)
        args.iw_samples, args.iw_sentences = min(args.iw_samples, 5), min(args.iw_sentences or 20, 20)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = Sizes.quick() if args.quick else Sizes()
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    names = args.only or list(ENTRIES)
    unknown = [n for n in names + ([args.profile] if args.profile else []) if n not in ENTRIES]
    if unknown:
        print(f"unknown entries {unknown}; known: {list(ENTRIES)}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    record = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
              "sizes": asdict(sizes), "batch_size": args.batch_size, "steps": args.steps,
              "warmup": args.warmup, "runs": {}}
    for name in devices:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            print("cuda requested but not available", file=sys.stderr)
            return 2
        ids, mask = make_batch(sizes, args.batch_size, device)
        setup = Setup(sizes=sizes, device=device, input_ids=ids, attention_mask=mask)
        if args.profile:
            print(profile(setup, args.profile))
            continue
        results = run(setup, names, args.warmup, args.steps)
        print(report(setup, results, args))
        if args.trainer and REFERENCE in results:
            rate = trainer_tokens_per_s(sizes, device, args.batch_size, args.steps, args.warmup, args.quick)
            results[TRAINER] = {"tokens_per_s": rate}
            ratio = rate / results[REFERENCE]["tokens_per_s"]
            print(f"{TRAINER:<36} {rate:>10.0f} tokens/s (bucketed PTB batches of {args.batch_size}, logged steps)")
            print(f"trainer / reference          {ratio:6.3f}x tokens/s  (target >= 0.8: {'met' if ratio >= 0.8 else 'NOT met'})")
        iw = iw_eval_seconds(sizes, device, args.iw_samples, args.iw_sentences, args.quick) if args.iw_eval else None
        if iw is not None:
            verdict = ("" if args.iw_sentences else  # the target is for the whole split
                       f"  (target <= {IW_TARGET_S:g} s: {'met' if iw['seconds'] <= IW_TARGET_S else 'NOT met'})")
            print(f"IW-NLL evaluation (K = {iw['iw_samples']}, {iw['sentences']} test sentences, {iw['tokens']} "
                  f"tokens) {iw['seconds']:.1f} s{verdict}")
        print()
        record["runs"][name] = {"hardware": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
                                "threads": torch.get_num_threads(), "results": results, "iw_eval": iw}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
    return 0



if __name__ == "__main__":
    sys.exit(main())
