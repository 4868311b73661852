"""Suite-wide settings: one torch thread per test process, a fresh Accelerate state per test,
``TEXTVAE_DATA`` pointing at ``../shared/data`` beside the checkout (unless already set),
where the PTB copy the tests read lives, and ``TEXTVAE_CACHE`` at a temporary folder.

``make test`` runs two pytest workers on two cores; with torch's default of one thread
per core each, four spinning threads share two cores and small models run 10-40x
slower. Subprocesses started by tests inherit ``OMP_NUM_THREADS``.
"""

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TEXTVAE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
# Tokenised splits and trained tokenizers are cached; the suite's go to a folder of its own
# (one per worker, subprocesses included), never to the user's ~/.cache/textvae.
_CACHE = tempfile.mkdtemp(prefix="textvae-test-cache-")
os.environ["TEXTVAE_CACHE"] = _CACHE
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def backbones(tmp_path_factory) -> Path:
    """Tiny random GPT-2, Llama, BERT and DistilBERT models with their tokenizers, saved once
    (tests/helpers_backbones.py): the pretrained-backbone code loads them as real ones."""
    from tests.helpers_backbones import save_tiny_backbone

    root = tmp_path_factory.mktemp("backbones")
    for kind in ("gpt2", "llama", "bert", "distilbert"):
        save_tiny_backbone(kind, root / kind)
    return root


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Forget Accelerate's process-wide singletons after each test.

    ``Accelerator()`` fills a shared state that outlives it; a later
    ``debug_launcher`` in the same worker forks children that inherit it and each
    believes it is the only process.
    """
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
