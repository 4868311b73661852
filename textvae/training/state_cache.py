"""A frozen pretrained decoder's states, computed once per corpus and memory-mapped.

With a frozen LM and a latent path that leaves the LM alone (``invlip``, ``none``), the
states h_t a sentence gives the LM never change during training: the LM is a fixed
function of the prefix. They are computed once per split, stored (bfloat16) as one flat
``(tokens, H)`` array with the offsets of each sentence, and every epoch reads them
instead of running the LM, so training costs the encoder and the head.

A cache is a directory named by its key: the LM's weights fingerprint, its tokenizer's
digest, the states' width and dtype, and a digest of the split's token ids (which covers
the corpus, the tokenizer and the length policy). It is built in a temporary sibling and
renamed into place, so a half-written cache never exists under its name, and two
processes that build the same key both end with one complete copy. On opening, the
manifest, the files' sizes and a sampled digest of the states are checked; a cache that
fails is reported in one line and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from textvae.data.batching import Collator, evaluation_order
from textvae.errors import TextVAEError
from textvae.models import TextVAEModel

FORMAT = 1
MANIFEST = "manifest.json"
STATES, OFFSETS = "states.bin", "offsets.npy"
# Bytes read at each of the sampled places that the manifest's digest covers.
_SAMPLE_BYTES, _SAMPLES = 4096, 64


def default_cache_root() -> Path:
    """``$TEXTVAE_CACHE/lm-states``, else ``~/.cache/textvae/lm-states``."""
    root = os.environ.get("TEXTVAE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "textvae") / "lm-states"


def can_cache(model: TextVAEModel, word_dropout: float) -> bool:
    """Whether ``model``'s decoder states depend on the prefix alone: a frozen pretrained LM,
    z outside it, and no word dropout changing its inputs."""
    config = model.config
    return (config.decoder_type == "pretrained" and config.decoder_trainable == "frozen"
            and not model.decoder.uses_latent and word_dropout == 0)


def ids_digest(ids: Sequence[Sequence[int]]) -> str:
    digest = hashlib.sha256()
    for row in ids:
        digest.update(np.asarray(row, dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def cache_key(model: TextVAEModel, ids: Sequence[Sequence[int]]) -> dict[str, Any]:
    """What a cache's states depend on; its digest names the cache directory."""
    config = model.config
    tokenizer = model.tokenizer
    vocabulary = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest() if tokenizer else None
    return {"format": FORMAT, "lm": config.decoder_fingerprint, "lm_name": config.decoder_name_or_path,
            "tokenizer": vocabulary, "width": model.decoder.output_size, "dtype": "bfloat16",
            "sentences": len(ids), "tokens": int(sum(len(row) - 1 for row in ids)), "ids": ids_digest(ids)}


class StateCache:
    """The cached states of one split: ``features(indices)`` gives a batch's (B, T - 1, H) states."""

    def __init__(self, directory: Path, manifest: dict[str, Any], built: bool) -> None:
        self.directory, self.manifest, self.built = directory, manifest, built
        width = manifest["key"]["width"]
        raw = np.memmap(directory / STATES, dtype=np.uint16, mode="r", shape=(manifest["key"]["tokens"], width))
        with warnings.catch_warnings():  # read-only memory: nothing here ever writes to it
            warnings.simplefilter("ignore", UserWarning)
            self.states = torch.from_numpy(raw).view(torch.bfloat16) if raw.size else torch.zeros(0, width)
        self.offsets = np.load(directory / OFFSETS)

    def features(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Each sentence's states, right-padded with zeros (what the padded positions hold does
        not matter: their predictions are masked)."""
        rows = [self.states[self.offsets[i]:self.offsets[i + 1]] for i in indices]
        return {"decoder_states": torch.nn.utils.rnn.pad_sequence(rows, batch_first=True).float()}


def open_or_build(model: TextVAEModel, ids: Sequence[Sequence[int]], name: str, root: Path | None = None,
                  batch_size: int = 32, progress: bool = True) -> StateCache:
    """The cache of ``ids`` (split ``name``) under ``root``: opened when complete and intact,
    else (re)built. A damaged or foreign one is reported in one line on stderr first."""
    root = default_cache_root() if root is None else Path(root)
    key = cache_key(model, ids)
    directory = root / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    if directory.exists():
        problem = _check(directory, key)
        if problem is None:
            return StateCache(directory, json.loads((directory / MANIFEST).read_text()), built=False)
        print(f"state cache {directory}: {problem}; rebuilding it", file=sys.stderr)
    _build(model, ids, name, directory, key, batch_size, progress)
    return StateCache(directory, json.loads((directory / MANIFEST).read_text()), built=True)


def _sampled_digest(path: Path) -> str:
    """SHA256 of ``_SAMPLES`` evenly spaced blocks of the file and of its size: catches a
    truncated or overwritten file without reading gigabytes."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        for k in range(_SAMPLES):
            handle.seek(max(size - _SAMPLE_BYTES, 0) * k // max(_SAMPLES - 1, 1))
            digest.update(handle.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def _check(directory: Path, key: dict[str, Any]) -> str | None:
    """Why the cache in ``directory`` cannot be used, or None."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return "no readable manifest (an interrupted or damaged cache)"
    if not isinstance(manifest, dict) or manifest.get("key") != key:
        return "its manifest belongs to another model, tokenizer or corpus"
    states = directory / STATES
    expected = key["tokens"] * key["width"] * 2
    if not states.is_file() or states.stat().st_size != expected:
        return f"{STATES} is not {expected} bytes (truncated or damaged)"
    if _sampled_digest(states) != manifest.get("states_digest"):
        return f"{STATES} does not match its recorded digest (damaged)"
    try:
        offsets = np.load(directory / OFFSETS)
    except (OSError, ValueError):
        return f"{OFFSETS} is unreadable"
    if offsets.shape != (key["sentences"] + 1,) or offsets[-1] != key["tokens"]:
        return f"{OFFSETS} does not fit the corpus"
    return None


@torch.no_grad()
def _build(model: TextVAEModel, ids: Sequence[Sequence[int]], name: str, directory: Path, key: dict[str, Any],
           batch_size: int, progress: bool) -> None:
    """Run the LM once over ``ids`` (longest batches first) and write the cache atomically."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        lengths = np.array([len(row) - 1 for row in ids], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        width = key["width"]
        states = np.memmap(tmp / STATES, dtype=np.uint16, mode="w+", shape=(key["tokens"], width)) \
            if key["tokens"] else np.zeros((0, width), dtype=np.uint16)
        view = torch.from_numpy(states).view(torch.bfloat16)
        was_training = model.training
        model.eval()
        collate = Collator(model.config.pad_token_id)
        bar = tqdm(total=len(ids), desc=f"LM states ({name})", unit="sent", disable=not progress, file=sys.stderr)
        use_autocast = model.device.type == "cuda"
        for batch in evaluation_order([len(row) for row in ids], batch_size):
            inputs = collate([ids[i] for i in batch])["input_ids"][:, :-1].to(model.device)
            with torch.autocast(device_type=model.device.type, dtype=torch.bfloat16, enabled=use_autocast):
                hidden = model.decoder(inputs, None).to(torch.bfloat16).cpu()
            for row, i in enumerate(batch):
                view[offsets[i]:offsets[i + 1]] = hidden[row, : lengths[i]]
            bar.update(len(batch))
        bar.close()
        model.train(was_training)
        if isinstance(states, np.memmap):
            states.flush()
        else:
            states.tofile(tmp / STATES)
        np.save(tmp / OFFSETS, offsets)
        manifest = {"key": key, "split": name, "states_digest": _sampled_digest(tmp / STATES)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if directory.exists() and _check(directory, key) is not None:
            shutil.rmtree(directory, ignore_errors=True)  # the damaged one the caller reported
        try:
            os.replace(tmp, directory)
        except OSError:  # another process renamed its copy first: keep it if it is whole
            if _check(directory, key) is not None:
                raise
    except OSError as exc:
        raise TextVAEError(f"state cache {directory}: cannot write it ({exc.strerror or exc}); "
                           "free disk space or set train.state_cache_dir") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
