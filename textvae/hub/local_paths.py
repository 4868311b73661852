"""What a push may say about the uploader's machine: no local path.

Two rules, applied to every file :mod:`textvae.hub.push` uploads and to the model card:

* Metadata is rewritten: every absolute or home-relative path in a JSON, JSONL or YAML
  file (the recipe's corpus and output directory, a tokenizer's training file, the
  evaluation's sources), in a safetensors header's metadata (``attributes.safetensors``
  of earlier versions named its labels file by absolute path) and in the card becomes its
  last component (:func:`scrub_local_paths`). These strings describe the model; cutting
  them changes nothing it does.
* Data is never rewritten (a tokenizer's vocabulary, merges, a sentencepiece model, a
  chat template, the tensors): changing it would change the model. What is uploaded, as
  rewritten, is then searched for a path inside this machine's private places (the home,
  working, temporary and export directories, :func:`private_places`), and a hit refuses
  the push in one line naming the file and the field (:func:`find_private_path`), before
  anything is sent.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any

import yaml

from textvae.errors import TextVAEError

# Files whose strings are data (tokens), never rewritten; every other JSON/YAML file is scrubbed.
VOCABULARY_FILES = ("tokenizer.json", "vocab.*", "merges.txt", "*.model", "added_tokens.json")
METADATA_SUFFIXES = (".json", ".jsonl", ".yaml", ".yml")
# An absolute path (POSIX, Windows or ~/...) inside a string; not the path part of a URL.
_LOCAL_PATH = re.compile(r"(?<![\w:/.\\])(?:~|[A-Za-z]:)?[/\\](?:[^\s/\\'\"]+[/\\]?)+")


def scrub_local_paths(value: Any) -> Any:
    """``value`` (a string, or JSON/YAML data) with every local absolute path replaced by its
    last component: ``/home/ann/data/ptb`` -> ``ptb``; the home directory itself -> ``~``."""
    if isinstance(value, str):
        return _LOCAL_PATH.sub(lambda match: _public_name(match.group()), value)
    if isinstance(value, dict):
        return {key: scrub_local_paths(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub_local_paths(item) for item in value)
    return value


def _public_name(path: str) -> str:
    stripped = path.rstrip("/\\")
    if not stripped or os.path.expanduser(stripped) == os.path.expanduser("~"):
        return "~"
    return PurePath(stripped.replace("\\", "/")).name


def upload_content(path: Path, repo_id: str) -> str | bytes:
    """What to upload for an export file: the file itself, unless it is metadata (a JSON,
    JSONL or YAML file that is no vocabulary, a safetensors header's metadata) that names
    local paths; those are scrubbed (:func:`scrub_local_paths`). evaluation.json's checkpoint
    and data sources become the repo id and the corpus name, and config.json's embedded
    backbones' local paths (relative ones too) shrink to their directory names."""
    if path.suffix == ".safetensors":
        return _safetensors_content(path)
    if path.suffix not in METADATA_SUFFIXES or _is_vocabulary(path):
        return str(path)
    text = path.read_text(encoding="utf-8")
    if path.name == "config.json":
        config = json.loads(text)
        for part in ("decoder", "encoder"):
            name = config.get(f"{part}_name_or_path")
            if config.get(f"{part}_weights") == "embedded" and name and name.startswith(("/", ".", "~")):
                config[f"{part}_name_or_path"] = Path(name).name
        return (json.dumps(scrub_local_paths(config), indent=2, sort_keys=True) + "\n").encode()
    if path.name == "evaluation.json":
        results = json.loads(text)
        if isinstance(results.get("checkpoint"), dict) and "source" in results["checkpoint"]:
            results["checkpoint"]["source"] = repo_id
        if isinstance(results.get("data"), dict) and "source" in results["data"]:
            results["data"]["source"] = results["data"].get("corpus")
        return (json.dumps(scrub_local_paths(results), indent=2) + "\n").encode()
    scrubbed = scrub_local_paths(text)
    return str(path) if scrubbed == text else scrubbed.encode()


def _is_vocabulary(path: Path) -> bool:
    return any(fnmatch.fnmatch(path.name, pattern) for pattern in VOCABULARY_FILES)


def _safetensors_content(path: Path) -> str | bytes:
    """The file, or (when its header's metadata names a local path) the file with that
    metadata scrubbed: the header is rewritten, the tensor bytes after it are kept as they
    are (safetensors offsets count from the end of the header, so they stay right)."""
    header, data_start = _safetensors_header(path)
    metadata = header.get("__metadata__") or {}
    scrubbed = {key: _scrub_metadata_value(value) for key, value in metadata.items()}
    if scrubbed == metadata:
        return str(path)
    raw = json.dumps({**header, "__metadata__": scrubbed}, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the 8-byte alignment the safetensors writer keeps
    with path.open("rb") as handle:
        handle.seek(data_start)
        return len(raw).to_bytes(8, "little") + raw + handle.read()


def _scrub_metadata_value(value: str) -> str:
    """A metadata string; JSON in it (textvae's attribute header) is scrubbed as data, so a
    Windows path's escaped backslashes are seen as the path they are."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return scrub_local_paths(value)
    if not isinstance(parsed, (dict, list)):
        return scrub_local_paths(value)
    scrubbed = scrub_local_paths(parsed)
    return value if scrubbed == parsed else json.dumps(scrubbed)


def _safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file, and where its tensor bytes start."""
    with path.open("rb") as handle:
        prefix = handle.read(8)
        size = int.from_bytes(prefix, "little")
        try:
            if len(prefix) < 8 or size > path.stat().st_size - 8:
                raise ValueError("header size past the end of the file")
            header = json.loads(handle.read(size))
            if not isinstance(header, dict):
                raise ValueError("header is not a JSON object")
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise TextVAEError(f"{path}: corrupt safetensors header ({exc}); fix or remove it before pushing") from None
    return header, 8 + size


def private_places(directory: Path) -> re.Pattern[str]:
    """A path inside this machine's home, working, temporary or export directory, as it
    appears in a file (also with JSON-escaped backslashes, for Windows paths)."""
    places = {Path.home(), Path.cwd(), Path(tempfile.gettempdir()), Path(directory)}
    names = set()
    for place in places:
        for form in (place.absolute(), place.resolve()):
            if len(form.parts) > 1:  # the root itself is no one's private place
                names |= {str(form), str(form).replace("\\", "\\\\")}
    alternatives = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
    return re.compile(f"(?:{alternatives})[/\\\\][^\\s'\"]*")


def find_private_path(name: str, content: str | bytes, places: re.Pattern[str]) -> str | None:
    """Where the upload ``content`` of file ``name`` (a path to read, or the bytes to send)
    names a private path, as ``FIELD (PATH)``; None when it names none."""
    text = _published_text(name, content)
    match = places.search(text)
    if match is None:
        return None
    return f"{_field(name, text, match.start(), places)} ({match.group()})"


def _published_text(name: str, content: str | bytes) -> str:
    """The bytes a file publishes, decoded losslessly; of a safetensors file only the header
    (the rest is numbers)."""
    if isinstance(content, bytes):
        data = content
    elif name.endswith(".safetensors"):
        data = _read_prefix(Path(content))
    else:
        data = Path(content).read_bytes()
    if name.endswith(".safetensors"):
        data = data[8 : 8 + int.from_bytes(data[:8], "little")]
    return data.decode("utf-8", "surrogateescape")


def _read_prefix(path: Path) -> bytes:
    with path.open("rb") as handle:
        prefix = handle.read(8)
        return prefix + handle.read(int.from_bytes(prefix, "little"))


def _field(name: str, text: str, position: int, places: re.Pattern[str]) -> str:
    """The key path (``data.source``) of JSON or YAML, else the line, else the byte offset."""
    key = next(_keys_matching(_parsed(name, text), places), None)
    if key is not None:
        return f"field {key or '(the whole document)'}"
    if "\0" in text:
        return f"byte {len(text[:position].encode('utf-8', 'surrogateescape'))}"
    return f"line {text.count(chr(10), 0, position) + 1}"


def _parsed(name: str, text: str) -> Any:
    try:
        if name.endswith((".json", ".safetensors")):
            return json.loads(text)
        if name.endswith((".yaml", ".yml")):
            return yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        pass
    return None


def _keys_matching(value: Any, places: re.Pattern[str], prefix: str = "") -> Iterator[str]:
    """Dotted key paths of the strings (keys or values) in ``value`` that name a private path."""
    if isinstance(value, dict):
        for key, item in value.items():
            if places.search(str(key)):
                yield prefix
            yield from _keys_matching(item, places, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _keys_matching(item, places, f"{prefix}[{index}]")
    elif isinstance(value, str) and places.search(value):
        yield prefix
