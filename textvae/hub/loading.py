"""Load a trained model from a local export, a run directory or a Hub repo id, with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from textvae.errors import TextVAEError
from textvae.hub.failures import (
    check_token,
    explain_hub_error,
    repo_id_problem,
    scrub_token,
    unreachable_message,
    unreachable_reason,
)
from textvae.models import TextVAEModel
from textvae.models.latents import ATTRIBUTES_FILE, AttributeVectors


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
    # Path("") is the working directory, but "" names no checkpoint: it goes to the repo id check.
    looks_local = source != "" and (path.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1)
    if not looks_local:
        check_hub_request(source, hub_kwargs)
    if looks_local:
        if not path.is_dir():
            raise TextVAEError(f"checkpoint not found: {source}")
        if not (path / "config.json").is_file():
            raise TextVAEError(f"{source}: not a textvae export (no config.json)")
        weights = [p for p in path.glob("*.safetensors") if p.name != ATTRIBUTES_FILE]
        if not weights and not any(path.glob("*.bin")):
            raise TextVAEError(f"{source}: no model weights (model.safetensors) in the export")
    hub_kwargs, unreachable = (hub_kwargs, None) if looks_local else cache_only_if_unreachable(hub_kwargs)
    try:
        model = TextVAEModel.from_pretrained(source, **hub_kwargs)
    except TextVAEError:
        raise
    except Exception as exc:  # noqa: BLE001 -- every loader failure becomes one line
        message = None if looks_local else describe_hub_failure(exc, source, hub_kwargs.get("token"), unreachable)
        if message is None:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            message = scrub_token(f"{source}: could not load the checkpoint ({type(exc).__name__}: {first_line})",
                                  _token(hub_kwargs))
    else:
        if device is not None:
            model.to(device)
        return model.eval()
    # Raised outside the handler, so the client's exception (whose request holds the token) is not chained.
    raise TextVAEError(message)


def check_hub_request(repo_id: str, hub_kwargs: dict[str, Any]) -> None:
    """Refuse, before any download, a name that is no local directory and no Hub repo id
    (huggingface_hub's own validator), and a token no HTTP header can carry."""
    problem = repo_id_problem(repo_id)
    if problem:
        raise TextVAEError(f"checkpoint not found: no such local directory, and {problem}")
    token = _token(hub_kwargs)
    if token:
        check_token(token, given=isinstance(hub_kwargs.get("token"), str))


def _token(hub_kwargs: dict[str, Any]) -> str | None:
    """The token a download sends: the one given, else (unless ``token=False``) the ambient one."""
    from huggingface_hub import get_token

    token = hub_kwargs.get("token")
    if isinstance(token, str):
        return token
    return None if token is False else get_token()


def cache_only_if_unreachable(hub_kwargs: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``hub_kwargs`` for a download, and why the Hub cannot be reached (None when it can).

    An unreachable endpoint (one connection tried, :func:`~textvae.hub.failures.unreachable_reason`)
    turns the download into a look in the local cache, so a cached model still loads and a
    missing one fails at once instead of after huggingface_hub's retries. Offline mode and
    ``local_files_only`` already keep the client off the network: nothing is tried then.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or hub_kwargs.get("local_files_only"):
        return hub_kwargs, None
    reason = unreachable_reason(constants.ENDPOINT)
    return ({**hub_kwargs, "local_files_only": True}, reason) if reason else (hub_kwargs, None)


def load_attribute_vectors(name_or_path: str | Path, **hub_kwargs: Any) -> AttributeVectors:
    """The attribute vectors stored with a checkpoint (export, run directory or Hub id).

    ``textvae attributes`` writes them into the export as :data:`ATTRIBUTES_FILE`, and
    ``textvae push`` uploads that file, so a Hub model can be edited as its owner did.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    source = resolve_export(name_or_path)
    missing = (f"{source}: no attribute vectors ({ATTRIBUTES_FILE}); compute them with "
               f"`textvae attributes {name_or_path} LABELS.jsonl`")
    if source and Path(source).is_dir():  # Path("") is the working directory, "" no name of it
        if not (Path(source) / ATTRIBUTES_FILE).is_file():
            raise TextVAEError(missing)
        return AttributeVectors.load(Path(source) / ATTRIBUTES_FILE)
    check_hub_request(source, hub_kwargs)
    hub_kwargs, unreachable = cache_only_if_unreachable(hub_kwargs)
    try:
        path = hf_hub_download(source, ATTRIBUTES_FILE, **hub_kwargs)
    except RemoteEntryNotFoundError:  # the repo has no such file (a cache miss offline is not this)
        message = missing
    except Exception as exc:  # noqa: BLE001 -- a Hub failure becomes one line, anything else is re-raised
        message = describe_hub_failure(exc, source, hub_kwargs.get("token"), unreachable)
        if message is None:
            raise
    else:
        return AttributeVectors.load(path)
    raise TextVAEError(message)


def describe_hub_failure(exc: BaseException, repo_id: str, token: str | None = None,
                         unreachable: str | None = None) -> str | None:
    """One line for a failed Hub download, without the token; None when the Hub is not the cause.

    ``unreachable``: why the endpoint could not be reached (:func:`cache_only_if_unreachable`):
    the download then only looked in the cache, and that is the failure to report. A token
    no header can carry is the cause whatever the client made of it (a caller that did not
    check first, like ``evaluate``'s fetch of the recipe, gets a ``UnicodeEncodeError``)."""
    from huggingface_hub import constants

    if unreachable:
        return unreachable_message(constants.ENDPOINT, unreachable, writing=False)
    try:
        check_hub_request(repo_id, {"token": token})
    except TextVAEError as problem:
        return str(problem)
    return explain_hub_error(exc, repo_id, constants.ENDPOINT, writing=False, token=_token({"token": token}))
