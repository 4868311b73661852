"""Hub failures in one line each: which one it was, never the token.

transformers and huggingface_hub report an offline cache miss, an unreachable endpoint,
a missing repo and a rejected token in many shapes (often wrapped in an ``OSError`` that
names huggingface.co whatever the endpoint); downloads and uploads both explain them here.
What they would only find out half-way (a repo id the client refuses, a token no HTTP
header can carry) is checked here before any work (:func:`repo_id_problem`,
:func:`check_token`), and every explanation passes through :func:`scrub_token`.
"""

from __future__ import annotations

import functools
import os
import re
import socket
from urllib.parse import urlsplit

from huggingface_hub import constants
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from textvae.errors import InvalidArgument, TextVAEError

# Access tokens as the Hub issues them (hf_..., api_org_...), whoever's they are; and the
# value of an Authorization header as an HTTP client quotes it, up to its closing quote.
_TOKEN_SHAPED = re.compile(r"(?:hf|api_org)_[A-Za-z0-9]{20,}")
_BEARER_VALUE = re.compile(r"(?i)(bearer\s+)[^'\"\n]*")


def repo_id_problem(repo_id: object) -> str | None:
    """Why ``repo_id`` is not a Hub repo id, by huggingface_hub's own validator, as one line
    that names the id once (quoted, so a newline in it stays on the line); None when it is one."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        rule = str(exc).split(f": '{repo_id}'")[0].split(f" '{repo_id}'")[0]  # the validator quotes the id too
        shown = repr(repo_id) if not isinstance(repo_id, str) or len(repo_id) <= 100 else \
            f"{repo_id[:100]!r}... ({len(repo_id)} characters)"
        return f"{shown} is not a Hub repo id: {' '.join(rule.split()).rstrip('.:')}"
    return None


def check_token(token: str, given: bool) -> None:
    """Refuse, in one line that never quotes it, a token no HTTP header can carry.

    httpx fails on such a header with an error that quotes it (the token) and that reads
    like a connection failure. ``given``: passed by the caller (``--token``), rather than
    found in ``HF_TOKEN`` or the ``hf auth login`` file.
    """
    if not token:
        problem = "it is empty"
    elif any(char.isspace() for char in token):
        problem = "it contains whitespace (a token is one word, like hf_...)"
    elif not (token.isascii() and token.isprintable()):
        problem = "it contains a non-ASCII or control character (a token is printable ASCII, like hf_...)"
    else:
        return
    if given:
        raise InvalidArgument("token", f"not a Hugging Face token: {problem}")
    source = next((f"${name}" for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN") if os.environ.get(name, "").strip()),
                  "the token file of `hf auth login`")
    raise TextVAEError(f"the Hugging Face token in {source} is malformed: {problem}; fix it, or log in again "
                       "with `hf auth login`")


def scrub_token(text: str, token: str | None) -> str:
    """``text`` without ``token`` (as it is, or escaped in a repr), an Authorization header's
    value, or anything shaped like a Hub token: for messages built from server or client text."""
    if token:
        for form in {token, repr(token)[1:-1], repr(token.encode("utf-8", "replace"))[2:-1]}:
            text = text.replace(form, "***")
    return _TOKEN_SHAPED.sub("***", _BEARER_VALUE.sub(r"\1***", text))


def explain_hub_error(exc: BaseException, repo_id: str, endpoint: str, writing: bool,
                      token: str | None = None) -> str | None:
    """One line saying which Hub failure ``exc`` is, or None when it is not one; never
    containing ``token`` or any other token (:func:`scrub_token`).

    Looks through the exception's causes, since transformers wraps the client's errors
    in an ``OSError`` whose text names huggingface.co whatever the endpoint.
    """
    message = _explain(exc, repo_id, endpoint, writing, token)
    return None if message is None else scrub_token(message, token)


def _explain(exc: BaseException, repo_id: str, endpoint: str, writing: bool, token: str | None) -> str | None:
    for err in _causes(exc):
        if isinstance(err, HFValidationError):  # the client refused an argument before sending anything
            return repo_id_problem(repo_id) or f"the Hub client refused the request: {_first_line(err, token)}"
        if isinstance(err, OfflineModeIsEnabled) or (constants.HF_HUB_OFFLINE and isinstance(err, LocalEntryNotFoundError)):
            if writing:
                return "HF_HUB_OFFLINE is set, so nothing can be uploaded: unset it to push"
            return f"{repo_id}: not in the local cache, and HF_HUB_OFFLINE is set so it cannot be downloaded"
        if isinstance(err, HfHubHTTPError) and err.response is not None:
            return _explain_status(err, repo_id, endpoint, writing, token)
        if type(err).__name__ == "LocalProtocolError":  # never sent: no connection was tried
            return f"the HTTP client refused to send the request to the Hub ({_first_line(err, token)}): a malformed token or header"
        if _is_connection_error(err):
            return unreachable_message(endpoint, f"connection error: {_first_line(err, token) or type(err).__name__}", writing)
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


def _explain_status(err: HfHubHTTPError, repo_id: str, endpoint: str, writing: bool, token: str | None) -> str:
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
    detail = _first_line(err.server_message, token) if err.server_message else ""
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


def _first_line(value: object, token: str | None) -> str:
    """The first line of a client's or server's text, the token scrubbed first: a token with
    a newline in it would otherwise leave its first half on the line."""
    text = scrub_token(str(value), token).strip()
    return text.splitlines()[0].strip() if text else ""
