"""``textvae push``: share a trained sentence VAE on the Hugging Face Hub.

One push is one Hub commit holding everything a stranger needs: the config and
safetensors weights, the tokenizer (``TextVAEModel.from_pretrained`` re-attaches it), the
recipe, the training summary, the evaluation numbers, and a model card generated from
them (:mod:`textvae.hub.model_card`). The commit is built from explicit
``CommitOperationAdd`` entries pointing at the export's files plus the card in memory,
so the local export is only read, never written.

Only files a textvae export is known to contain are uploaded (:data:`EXPORT_PATTERNS`):
an export directory may also hold notes, data samples or plots its owner never meant to
publish. Nor does the uploader's file system go public: metadata naming local paths is
rewritten, data naming one refuses the push (:mod:`textvae.hub.local_paths`), before
anything is sent.

The repo id (by huggingface_hub's own validator) and the token's form are checked before
the export is read. Failures a user can act on (no token, a malformed or rejected token,
no network, a refused upload) become one-line :class:`~textvae.errors.TextVAEError`
messages that say which one it was. They never contain the token, and they are raised
without the client's exception attached, whose HTTP request still carries the
``Authorization`` header.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import CommitOperationAdd, HfApi, get_token

from textvae.errors import InvalidArgument, TextVAEError
from textvae.hub.failures import check_token, explain_hub_error, repo_id_problem
from textvae.hub.loading import load_model, resolve_export
from textvae.hub.local_paths import (
    find_private_path,
    private_places,
    scrub_local_paths,
    upload_content,
)
from textvae.hub.model_card import FIGURES, build_model_card, generate_examples
from textvae.models import TextVAEModel
from textvae.models.latents import ATTRIBUTES_FILE
from textvae.models.modeling_textvae import ENCODER_TOKENIZER_DIR
from textvae.models.pretrained import local_path

# The weights' "*.safetensors" also takes the attribute vectors `textvae attributes` stores
# (ATTRIBUTES_FILE), so that `textvae edit HUB_ID` finds them.
EXPORT_PATTERNS = (
    "config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt",
    "*.model", "chat_template.jinja", "textvae_tokenizer.json",
    "recipe.yaml", "train_summary.json", "evaluation.json", "metrics.jsonl", *FIGURES,
)
METADATA_FILES = {"recipe": "recipe.yaml", "train_summary": "train_summary.json", "evaluation": "evaluation.json"}


@dataclass
class PushResult:
    """Where the model went: the repo, the commit (or pull request) and the files it holds."""

    repo_id: str
    commit_url: str
    commit_oid: str
    files: list[str]
    pr_url: str | None = None


# ------------------------------------------------------------------------ pushing
def push_export(source: str | Path, repo_id: str, *, merge: bool = False, **options: Any) -> PushResult:
    """Upload an export (or a run directory's ``final/``) with a generated model card.

    ``merge`` uploads a pretrained backbone's own weights too (LoRA merged into them), for
    an export that refers to a base model nobody else can load. Takes the keyword options
    of :func:`push_directory`.
    """
    check_push_target(repo_id, options.get("token"))
    export = Path(resolve_export(source))
    model = load_model(export)
    if not merge:
        return push_directory(model, export, repo_id, **options)
    with tempfile.TemporaryDirectory(prefix="textvae-push-") as tmp:
        model.save_pretrained(tmp, embed_backbones=True)
        for path in export_files(export):  # the recipe, reports and figures beside the weights
            target = Path(tmp) / path.relative_to(export)
            if not target.exists():
                shutil.copy2(path, target)
        return push_directory(model, Path(tmp), repo_id, **options)


def local_backbones(directory: Path) -> list[str]:
    """The backbones an export refers to by a local path (which nobody else can load)."""
    config = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
    found = []
    for part in ("decoder", "encoder"):
        name = config.get(f"{part}_name_or_path")
        if config.get(f"{part}_type") == "pretrained" and config.get(f"{part}_weights") == "reference" and name \
                and (Path(local_path(name)).exists() or name.startswith(("/", ".", "~"))):
            found.append(f"the {part} refers to the local directory {name}")
    return found


def push_model(model: TextVAEModel, repo_id: str, *, commit_message: str | None = None,
               commit_description: str | None = None, private: bool | None = None, token: bool | str | None = None,
               revision: str | None = None, create_pr: bool = False, max_shard_size: int | str | None = "50GB",
               tags: list[str] | None = None, license: str = "apache-2.0", endpoint: str | None = None) -> PushResult:
    """Upload an in-memory model the way :func:`push_export` uploads an export: weights, tokenizer
    and the textvae model card in one commit (``model.push_to_hub`` is refused: transformers'
    version would upload an empty card).

    transformers' own ``push_to_hub`` keywords, meaning what they mean there, plus the card's
    ``license``; the model is saved (weights sharded at ``max_shard_size``, and tokenizer) to a
    temporary directory first, and the rest are :func:`push_directory`'s.
    """
    check_push_target(repo_id, token)
    with tempfile.TemporaryDirectory(prefix="textvae-push-") as tmp:
        model.save_pretrained(tmp, max_shard_size=max_shard_size)
        return push_directory(model, Path(tmp), repo_id, private=private, revision=revision,
                              commit_message=commit_message, commit_description=commit_description,
                              create_pr=create_pr, token=token, tags=tags, license=license, endpoint=endpoint)


def push_directory(model: TextVAEModel, directory: Path, repo_id: str, *, private: bool | None = None,
                   revision: str | None = None, commit_message: str | None = None,
                   commit_description: str | None = None, create_pr: bool = False,
                   token: bool | str | None = None, tags: list[str] | None = None,
                   license: str = "apache-2.0", endpoint: str | None = None) -> PushResult:
    """Upload ``model``'s saved ``directory`` with a generated card: one commit, or one pull request.

    Checks everything local first (token, files, card inputs), then creates the repo,
    the branch and the commit. The options mean what they mean in transformers'
    ``push_to_hub``: ``revision`` names a branch (created from ``main`` when missing; with
    ``create_pr`` the branch the pull request targets), ``token`` defaults to (or with
    ``True`` is) ``HF_TOKEN`` or the ``hf auth login`` token, ``tags`` go into the card.
    """
    token = check_push_target(repo_id, token)
    if model.tokenizer is None:
        raise TextVAEError(f"{directory}: no tokenizer beside the weights; a pushed model could not read or write text")
    files = export_files(directory)
    local = local_backbones(directory)
    if local:
        raise TextVAEError(f"{directory}: {'; '.join(local)}, which nobody who downloads the model can load: push with "
                           "--merge (uploads the backbone's weights, LoRA merged), or train from its Hub id")
    metadata = scrub_local_paths(read_export_metadata(directory))
    places = private_places(directory)
    contents = {path.relative_to(directory).as_posix(): published(path, upload_content(path, repo_id), places)
                for path in files}
    examples = generate_examples(model)
    api = HfApi(endpoint=endpoint, token=token, library_name="textvae")
    try:
        repo_id = api.create_repo(repo_id, private=private or None, exist_ok=True).repo_id
        card = build_model_card(model, repo_id, examples, license=license, tags=tags or (),
                                figures=[path.name for path in files], **metadata)
        card.content = scrub_local_paths(card.content)
        contents["README.md"] = published(Path("README.md"), str(card).encode(), places)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=content) for name, content in contents.items()]
        message = commit_message or f"Upload textvae model ({model.config.latent_path})"
        info = api.create_commit(repo_id, operations, commit_message=message, commit_description=commit_description,
                                 revision=revision, create_pr=create_pr)
    except Exception as exc:  # noqa: BLE001 -- anything but a Hub failure is re-raised as it is
        failure = explain_hub_error(exc, repo_id, api.endpoint, writing=True, token=token)
        if failure is None:
            raise
    else:
        return PushResult(repo_id, info.commit_url, info.oid, list(contents), pr_url=info.pr_url)
    # Raised outside the handler, so no client exception (whose request holds the token) is chained.
    raise TextVAEError(failure)


def check_push_target(repo_id: str, token: bool | str | None) -> str:
    """The token to push to ``repo_id`` with, once both are known to be usable: checked
    before anything is read or sent, in one line that never quotes the token. ``token``
    None or True means ``HF_TOKEN`` or the ``hf auth login`` token."""
    problem = repo_id_problem(repo_id)
    if problem:
        raise TextVAEError(problem)
    given = isinstance(token, str)
    if not given:
        token = get_token() if token is None or token is True else None
        if token is None:
            raise InvalidArgument("token", "no Hugging Face token: log in with `hf auth login`, set HF_TOKEN, or pass one")
    check_token(token, given)
    return token


def published(path: Path, content: str | bytes, places: re.Pattern[str]) -> str | bytes:
    """``content`` (what :func:`upload_content` sends for ``path``), refused when it still
    names a path inside one of this machine's private ``places``: that is data textvae does
    not rewrite (:mod:`textvae.hub.local_paths`), and only its owner can say what it should be."""
    leak = find_private_path(path.name, content, places)
    if leak:
        raise TextVAEError(f"{path}: {leak} is a local path and would be published; remove it from the file "
                           "before pushing")
    return content


def export_files(directory: Path) -> list[Path]:
    """The files of an export that are uploaded, sorted; at least config and weights."""
    directory = Path(directory)
    # A pretrained encoder's own tokenizer sits in a folder of its own (TextVAEModel.from_pretrained reads it).
    folders = [directory, *([directory / ENCODER_TOKENIZER_DIR] if (directory / ENCODER_TOKENIZER_DIR).is_dir() else [])]
    files = sorted(p for folder in folders for p in folder.iterdir()
                   if p.is_file() and any(fnmatch.fnmatch(p.name, pattern) for pattern in EXPORT_PATTERNS))
    names = {p.name for p in files}
    if "config.json" not in names or not any(n.endswith(".safetensors") and n != ATTRIBUTES_FILE for n in names):
        raise TextVAEError(f"{directory}: not a textvae export (needs config.json and model.safetensors)")
    return files


def read_export_metadata(directory: Path) -> dict[str, Any]:
    """``recipe``, ``train_summary`` and ``evaluation`` from the export's files, None when absent."""
    out: dict[str, Any] = {}
    for key, name in METADATA_FILES.items():
        path = Path(directory) / name
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            out[key] = None
            continue
        try:
            out[key] = yaml.safe_load(text) if name.endswith(".yaml") else json.loads(text)
        except (yaml.YAMLError, json.JSONDecodeError) as exc:
            raise TextVAEError(f"{path}: corrupt {name} ({type(exc).__name__}); fix or remove it before pushing") from None
    return out

