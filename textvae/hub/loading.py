"""Load a trained model from a local export, a run directory or a Hub repo id, with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from textvae.errors import TextVAEError
from textvae.models import TextVAEModel


def resolve_export(name_or_path: str | Path) -> str:
    """A run directory means its ``final/`` export; anything else is passed on unchanged."""
    path = Path(name_or_path)
    if path.is_dir() and not (path / "config.json").exists() and (path / "final" / "config.json").exists():
        return str(path / "final")
    return str(name_or_path)


def load_model(name_or_path: str | Path, device: str | torch.device | None = None, **hub_kwargs: Any) -> TextVAEModel:
    """``TextVAEModel.from_pretrained`` for users: the model in eval mode, on ``device``.

    Accepts an export directory, a run directory (its ``final/`` export) or a Hub repo
    id. Missing, incomplete or corrupt checkpoints raise :class:`TextVAEError` naming
    the path instead of a traceback from deep inside transformers or safetensors. For a
    repo id the message says which Hub failure it was (offline, unreachable, no such
    repo, rejected token), since transformers' own text names huggingface.co whatever
    the endpoint and often blames the repo for a network problem.
    """
    source = resolve_export(name_or_path)
    path = Path(source)
    looks_local = path.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1
    if looks_local:
        if not path.is_dir():
            raise TextVAEError(f"checkpoint not found: {source}")
        if not (path / "config.json").is_file():
            raise TextVAEError(f"{source}: not a textvae export (no config.json)")
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise TextVAEError(f"{source}: no model weights (model.safetensors) in the export")
    unreachable = None if looks_local or hub_kwargs.get("local_files_only") else hub_unreachable()
    if unreachable:  # the local cache only: no retries against an endpoint that is not there
        hub_kwargs = {**hub_kwargs, "local_files_only": True}
    try:
        model = TextVAEModel.from_pretrained(source, **hub_kwargs)
    except TextVAEError:
        raise
    except Exception as exc:  # noqa: BLE001 -- every loader failure becomes one line
        message = None if looks_local else describe_hub_failure(exc, source, hub_kwargs.get("token"))
        if unreachable:
            from huggingface_hub import constants

            from textvae.hub.failures import unreachable_message

            message = unreachable_message(constants.ENDPOINT, unreachable, writing=False)
        if message is None:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            message = f"{source}: could not load the checkpoint ({type(exc).__name__}: {first_line})"
    else:
        if device is not None:
            model.to(device)
        return model.eval()
    # Raised outside the handler, so the client's exception (whose request holds the token) is not chained.
    raise TextVAEError(message)


def hub_unreachable() -> str | None:
    """Why the configured Hub endpoint cannot be reached (None when it can, or when offline mode
    already keeps the client off the network)."""
    from huggingface_hub import constants

    from textvae.hub.failures import unreachable_reason

    return None if constants.HF_HUB_OFFLINE else unreachable_reason(constants.ENDPOINT)


def describe_hub_failure(exc: BaseException, repo_id: str, token: str | None = None) -> str | None:
    """One line for a failed Hub download, without the token; None when the Hub is not the cause."""
    from huggingface_hub import constants, get_token

    from textvae.hub.failures import explain_hub_error, redact

    message = explain_hub_error(exc, repo_id, constants.ENDPOINT, writing=False)
    return None if message is None else redact(message, token if isinstance(token, str) else get_token())
