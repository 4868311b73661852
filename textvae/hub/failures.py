"""Hub failures in one line each: which one it was, never the token.

transformers and huggingface_hub report an offline cache miss, an unreachable endpoint,
a missing repo and a rejected token in many shapes (often wrapped in an ``OSError`` that
names huggingface.co whatever the endpoint); downloads and uploads both explain them here.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlsplit

from huggingface_hub import constants
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)


def explain_hub_error(exc: BaseException, repo_id: str, endpoint: str, writing: bool) -> str | None:
    """One line saying which Hub failure ``exc`` is, or None when it is not one.

    Looks through the exception's causes, since transformers wraps the client's errors
    in an ``OSError`` whose text names huggingface.co whatever the endpoint.
    """
    for err in _causes(exc):
        if isinstance(err, OfflineModeIsEnabled) or (constants.HF_HUB_OFFLINE and isinstance(err, LocalEntryNotFoundError)):
            if writing:
                return "HF_HUB_OFFLINE is set, so nothing can be uploaded: unset it to push"
            return f"{repo_id}: not in the local cache, and HF_HUB_OFFLINE is set so it cannot be downloaded"
        if isinstance(err, HfHubHTTPError) and err.response is not None:
            return _explain_status(err, repo_id, endpoint, writing)
        if _is_connection_error(err):
            return unreachable_message(endpoint, f"connection error: {_first_line(err) or type(err).__name__}", writing)
    return None


def unreachable_reason(endpoint: str, timeout: float = 5.0) -> str | None:
    """Why the Hub at ``endpoint`` cannot be reached, or None when it can (or cannot be told).

    One TCP connection with a short timeout, tried before a download: huggingface_hub itself
    retries a refused or timed-out connection five times with back-off (11 warnings and
    ~28 s) before it gives up. Behind a proxy a direct connection proves nothing, so it is
    not tried there.
    """
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                                               "ALL_PROXY", "all_proxy")):
        return None
    return _connect(endpoint, timeout)


@functools.lru_cache(maxsize=8)
def _connect(endpoint: str, timeout: float) -> str | None:
    parts = urlsplit(endpoint)
    if not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        return f"connection error: {exc.strerror or type(exc).__name__}"
    return None


def unreachable_message(endpoint: str, reason: str, writing: bool) -> str:
    """The one line for an endpoint that cannot be reached (see :func:`explain_hub_error`)."""
    missing = "" if writing else " and the model is not in the local cache"
    return f"cannot reach the Hugging Face Hub at {endpoint} ({reason}){missing}"


def _explain_status(err: HfHubHTTPError, repo_id: str, endpoint: str, writing: bool) -> str:
    status = err.response.status_code
    if isinstance(err, RevisionNotFoundError):
        return f"{repo_id}: revision not found on the Hub ({status})"
    if isinstance(err, RepositoryNotFoundError):
        return (f"{repo_id}: no such model repository at {endpoint} ({status}); if it is private, "
                "log in with `hf auth login` or set HF_TOKEN")
    if status == 401:
        return ("the Hub rejected the token (401 Unauthorized): it is invalid or expired; "
                "log in again with `hf auth login`, or fix HF_TOKEN or the token given")
    if status == 403:
        if writing:
            return f"the Hub refused the upload to {repo_id} (403 Forbidden): the token cannot write to this repository"
        return f"{repo_id}: access refused (403 Forbidden): the repository is gated or the token cannot read it"
    detail = _first_line(err.server_message) if err.server_message else ""
    detail = f": {detail}" if detail else ""
    action = f"the Hub refused the upload to {repo_id}" if writing else f"downloading {repo_id} failed"
    return f"{action} (HTTP {status}{detail})"


def _causes(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_connection_error(exc: BaseException) -> bool:
    """A transport failure of whichever HTTP client huggingface_hub uses, or of the OS.

    httpx/httpx2 raise subclasses of ``TransportError``, requests (older huggingface_hub)
    its own ``ConnectionError``/``Timeout``; matching by class name avoids importing them.
    """
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return any(cls.__name__ in ("TransportError", "ConnectionError", "Timeout") for cls in type(exc).__mro__)


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0].strip() if text else ""


def redact(text: str, token: str | None) -> str:
    """``text`` without ``token``: for messages built from server or client text."""
    return text.replace(token, "***") if token else text
