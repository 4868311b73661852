"""A Hugging Face Hub stand-in on 127.0.0.1, small enough to read, real enough for the client.

The tests drive the real ``huggingface_hub``/``transformers`` code against this server, so
the requests below are exactly the ones those libraries send (checked against
huggingface_hub 2.4): nothing is mocked inside the client, and nothing reaches the network.

Implemented:

* ``POST /api/repos/create`` (409 when the repo exists), ``GET /api/whoami-v2``
* ``GET /api/models/{repo}[/revision/{rev}]`` (``sha``, ``siblings``), ``GET .../tree/{rev}``
* ``POST /api/validate-yaml``, ``POST /api/models/{repo}/branch/{branch}``
* ``POST /api/models/{repo}/preupload/{rev}``: ``regular`` for every file, or ``lfs`` for the
  paths matching :attr:`FakeHub.lfs_patterns`
* ``POST /{repo}.git/info/lfs/objects/batch`` + ``PUT /_lfs/{oid}``: the legacy LFS upload
  (the client takes it only with Xet disabled)
* ``POST /api/models/{repo}/commit/{rev}``: the NDJSON commit (``file`` base64 inline,
  ``lfsFile`` by sha256 oid, ``deletedFile``); with ``?create_pr=1`` the commit goes to a
  new ``refs/pr/N`` and the reply carries its ``pullRequestUrl``
* ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` and, for LFS
  files, ``X-Linked-Etag``/``X-Linked-Size``

Auth follows the Hub: a wrong bearer token gets 401 "Invalid credentials in Authorization
header" on any route; writes need the valid token; repos in :attr:`FakeHub.refused` answer
403 to writes; :attr:`FakeHub.fail_commits_with` makes the commit endpoint fail with that
status. Every request is recorded (:attr:`FakeHub.requests`) for assertions.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
REPO = r"(?P<repo>[^/]+/[^/]+)"


@dataclass
class FileEntry:
    """One file of a commit: content lives in the blob store under its sha256."""

    sha256: str
    git_sha1: str
    size: int
    lfs: bool


@dataclass
class Repo:
    private: bool = False
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit oid
    commits: dict[str, dict[str, FileEntry]] = field(default_factory=dict)  # oid -> tree


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class Call:
    """One routed request as a route function sees it."""

    method: str
    args: dict[str, str]  # named groups of the route's pattern
    body: bytes
    token: str | None  # the bearer token, already checked to be the valid one when present
    query: dict[str, str] = field(default_factory=dict)  # the URL's query parameters


Reply = tuple[int, dict[str, str], bytes]  # status, headers, body


class HubError(Exception):
    """Raised inside a handler; becomes an HTTP error with the Hub's error headers."""

    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}
        self.headers = headers or {}


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports as a regular file's ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """Repos, blobs and the HTTP server answering for them. Use as a context manager."""

    def __init__(self, storage: Path, token: str, user: str = "tester"):
        self.storage = Path(storage)
        (self.storage / "blobs").mkdir(parents=True, exist_ok=True)
        self.token, self.user = token, user
        self.repos: dict[str, Repo] = {}
        self.requests: list[RecordedRequest] = []
        self.unrouted: list[str] = []  # requests no route matched: the client used an unimplemented API
        self.lfs_patterns: tuple[str, ...] = ()
        self.refused: set[str] = set()
        self.fail_commits_with: int | None = None
        self.descriptions: dict[str, str] = {}  # commit oid -> the commit's description
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> FakeHub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -------------------------------------------------------------- storage
    def put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.storage / "blobs" / sha
        if not path.exists():
            path.write_bytes(data)
        return sha

    def blob(self, sha256: str) -> bytes:
        return (self.storage / "blobs" / sha256).read_bytes()

    def has_blob(self, sha256: str) -> bool:
        return (self.storage / "blobs" / sha256).exists()

    def create_repo(self, repo_id: str, private: bool = False) -> Repo:
        """A repo with the Hub's initial commit (a ``.gitattributes``)."""
        repo = Repo(private=private)
        attributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
        tree = {".gitattributes": FileEntry(self.put_blob(attributes), git_blob_sha1(attributes), len(attributes), False)}
        oid = _commit_oid(tree, None, "initial commit")
        repo.commits[oid] = tree
        repo.branches["main"] = oid
        self.repos[repo_id] = repo
        return repo

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Path -> content at a revision: what a test compares with the local export."""
        repo = self.repos[repo_id]
        tree = repo.commits[repo.branches.get(revision, revision)]
        return {path: self.blob(entry.sha256) for path, entry in tree.items()}

    def commit_count(self, repo_id: str) -> int:
        return len(self.repos[repo_id].commits)

    def tree(self, repo_id: str, revision: str) -> tuple[str, dict[str, FileEntry]]:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        oid = repo.branches.get(revision, revision)
        if oid not in repo.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return oid, repo.commits[oid]

    def requests_to(self, method: str, pattern: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]


def _commit_oid(tree: dict[str, FileEntry], parent: str | None, message: str) -> str:
    listing = json.dumps({path: e.sha256 for path, e in sorted(tree.items())})
    return hashlib.sha1(f"{parent}\n{message}\n{listing}".encode()).hexdigest()


# ---------------------------------------------------------------------------- HTTP
def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    routes = [
        ("GET", r"^/api/whoami-v2$", _whoami),
        ("POST", r"^/api/repos/create$", _create_repo),
        ("POST", r"^/api/validate-yaml$", _validate_yaml),
        ("GET", rf"^/api/models/{REPO}(?:/revision/(?P<rev>[^/]+))?$", _repo_info),
        ("GET", rf"^/api/models/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$", _list_tree),
        ("POST", rf"^/api/models/{REPO}/branch/(?P<branch>[^/]+)$", _create_branch),
        ("POST", rf"^/api/models/{REPO}/preupload/(?P<rev>[^/]+)$", _preupload),
        ("POST", rf"^/api/models/{REPO}/commit/(?P<rev>[^/]+)$", _commit),
        ("POST", rf"^/{REPO}\.git/info/lfs/objects/batch$", _lfs_batch),
        ("PUT", r"^/_lfs/(?P<oid>[0-9a-f]{64})$", _lfs_put),
        ("HEAD", rf"^/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", _resolve),
        ("GET", rf"^/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", _resolve),
    ]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _dispatch(self) -> None:
            body = self._read_body() if self.command in ("POST", "PUT") else b""
            path = unquote(urlsplit(self.path).path)
            with hub._lock:
                seen = {key.lower(): value for key, value in self.headers.items()}
                hub.requests.append(RecordedRequest(self.command, self.path, seen, body))
            try:
                token = _bearer(self.headers)
                if token is not None and token != hub.token:
                    raise HubError(401, INVALID_CREDENTIALS)
                for method, pattern, fn in routes:
                    match = re.match(pattern, path)
                    if method == self.command and match:
                        with hub._lock:
                            status, headers, payload = fn(hub, Call(self.command, match.groupdict(), body, token,
                                                                dict(parse_qsl(urlsplit(self.path).query))))
                        break
                else:
                    hub.unrouted.append(f"{self.command} {path}")
                    raise HubError(404, f"no route for {self.command} {path}")
            except Exception as exc:  # noqa: BLE001 -- a bug in a route must reach the client as a 500
                err = exc if isinstance(exc, HubError) else HubError(500, f"fake hub bug: {exc!r}")
                status, payload = err.status, json.dumps({"error": err.message, **err.extra}).encode()
                headers = {"X-Error-Message": err.message, "Content-Type": "application/json", **err.headers}
                if err.code:
                    headers["X-Error-Code"] = err.code
            self.send_response(status)
            headers.setdefault("Content-Length", str(len(payload)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_HEAD = _dispatch

    return Handler


def _bearer(headers) -> str | None:
    value = headers.get("Authorization", "")
    return value[len("Bearer "):] if value.startswith("Bearer ") else None


def _json(payload, status: int = 200) -> Reply:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _require_write(hub: FakeHub, repo_id: str, token: str | None) -> None:
    if token is None:
        raise HubError(401, "Authorization header is required to write")
    if repo_id in hub.refused:
        raise HubError(403, "You don't have the rights to write to this repository")


def _readable_repo(hub: FakeHub, repo_id: str, token: str | None) -> Repo:
    repo = hub.repos.get(repo_id)
    if repo is None or (repo.private and token is None):
        raise HubError(401 if token is None else 404, "Repository not found", "RepoNotFound")
    return repo


def _whoami(hub: FakeHub, call: Call) -> Reply:
    if call.token is None:
        raise HubError(401, "Authorization header is required")
    return _json({"type": "user", "name": hub.user, "orgs": [], "auth": {"type": "access_token"}})


def _create_repo(hub: FakeHub, call: Call) -> Reply:
    request = json.loads(call.body)
    repo_id = f"{request.get('organization') or hub.user}/{request['name']}"
    _require_write(hub, repo_id, call.token)
    if repo_id in hub.repos:
        raise HubError(409, "You already created this model repo", extra={"url": f"{hub.url}/{repo_id}"})
    hub.create_repo(repo_id, private=request.get("visibility") == "private" or bool(request.get("private")))
    return _json({"url": f"{hub.url}/{repo_id}", "name": repo_id, "id": repo_id})


def _validate_yaml(hub: FakeHub, call: Call) -> Reply:
    content = json.loads(call.body)["content"]
    if content.startswith("---"):
        try:
            yaml.safe_load(content.split("---", 2)[1])
        except yaml.YAMLError as exc:
            return _json({"errors": [{"message": str(exc)}], "warnings": []}, status=400)
    return _json({"errors": [], "warnings": []})


def _repo_info(hub: FakeHub, call: Call) -> Reply:
    repo = _readable_repo(hub, call.args["repo"], call.token)
    oid, tree = hub.tree(call.args["repo"], call.args.get("rev") or "main")
    siblings = [{"rfilename": path} for path in sorted(tree)]
    return _json({"id": call.args["repo"], "modelId": call.args["repo"], "sha": oid, "private": repo.private,
                  "siblings": siblings, "tags": [], "downloads": 0, "likes": 0})


def _list_tree(hub: FakeHub, call: Call) -> Reply:
    _readable_repo(hub, call.args["repo"], call.token)
    _, tree = hub.tree(call.args["repo"], call.args["rev"])
    prefix = (call.args.get("path") or "").strip("/")
    entries = []
    for path, entry in sorted(tree.items()):
        if prefix and not path.startswith(prefix + "/"):
            continue
        item = {"type": "file", "path": path, "size": entry.size, "oid": entry.git_sha1}
        if entry.lfs:
            item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": 134}
        entries.append(item)
    return _json(entries)


def _create_branch(hub: FakeHub, call: Call) -> Reply:
    _require_write(hub, call.args["repo"], call.token)
    repo = _readable_repo(hub, call.args["repo"], call.token)
    if call.args["branch"] in repo.branches:
        raise HubError(409, "Reference already exists")
    start = (json.loads(call.body or b"{}") or {}).get("startingPoint") or "main"
    repo.branches[call.args["branch"]] = hub.tree(call.args["repo"], start)[0]
    return _json({})


def _preupload(hub: FakeHub, call: Call) -> Reply:
    _require_write(hub, call.args["repo"], call.token)
    _, tree = hub.tree(call.args["repo"], call.args["rev"])
    files = []
    for item in json.loads(call.body)["files"]:
        lfs = any(fnmatch.fnmatch(item["path"], pattern) for pattern in hub.lfs_patterns)
        existing = tree.get(item["path"])
        oid = None if existing is None else (existing.sha256 if existing.lfs else existing.git_sha1)
        files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular",
                      "shouldIgnore": False, "oid": oid})
    return _json({"files": files})


def _lfs_batch(hub: FakeHub, call: Call) -> Reply:
    _require_write(hub, call.args["repo"], call.token)
    objects = []
    for obj in json.loads(call.body)["objects"]:
        entry = {"oid": obj["oid"], "size": obj["size"]}
        if not hub.has_blob(obj["oid"]):
            entry["actions"] = {"upload": {"href": f"{hub.url}/_lfs/{obj['oid']}", "header": {}}}
        objects.append(entry)
    return _json({"transfer": "basic", "objects": objects})


def _lfs_put(hub: FakeHub, call: Call) -> Reply:
    if hashlib.sha256(call.body).hexdigest() != call.args["oid"]:
        raise HubError(400, "sha256 of the body does not match the oid")
    hub.put_blob(call.body)
    return _json({})


def _commit(hub: FakeHub, call: Call) -> Reply:
    _require_write(hub, call.args["repo"], call.token)
    if hub.fail_commits_with is not None:
        raise HubError(hub.fail_commits_with, "The commit could not be created")
    repo = _readable_repo(hub, call.args["repo"], call.token)
    if call.args["rev"] not in repo.branches:
        raise HubError(404, f"Invalid rev id: {call.args['rev']}", "RevisionNotFound")
    parent = repo.branches[call.args["rev"]]
    tree = dict(repo.commits[parent])
    message = ""
    for line in call.body.splitlines():
        item = json.loads(line)
        value = item["value"]
        if item["key"] == "header":
            message = value["summary"]
            description = value.get("description", "")
        elif item["key"] == "file":
            data = base64.b64decode(value["content"])
            tree[value["path"]] = FileEntry(hub.put_blob(data), git_blob_sha1(data), len(data), False)
        elif item["key"] == "lfsFile":
            if not hub.has_blob(value["oid"]):
                raise HubError(422, f"LFS object {value['oid']} was never uploaded")
            data = hub.blob(value["oid"])
            tree[value["path"]] = FileEntry(value["oid"], git_blob_sha1(data), len(data), True)
        elif item["key"] == "deletedFile":
            tree.pop(value["path"], None)
    oid = _commit_oid(tree, parent, message)
    repo.commits[oid] = tree
    hub.descriptions[oid] = description
    reply = {"commitUrl": f"{hub.url}/{call.args['repo']}/commit/{oid}", "commitOid": oid, "success": True}
    if call.query.get("create_pr") == "1":  # a pull request: its own ref, the target branch unchanged
        number = sum(branch.startswith("refs/pr/") for branch in repo.branches) + 1
        repo.branches[f"refs/pr/{number}"] = oid
        reply["pullRequestUrl"] = f"{hub.url}/{call.args['repo']}/discussions/{number}"
    else:
        repo.branches[call.args["rev"]] = oid
    return _json(reply)


def _resolve(hub: FakeHub, call: Call) -> Reply:
    _readable_repo(hub, call.args["repo"], call.token)
    oid, tree = hub.tree(call.args["repo"], call.args["rev"])
    entry = tree.get(call.args["path"])
    if entry is None:
        raise HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": oid})
    headers = {"X-Repo-Commit": oid, "ETag": f'"{entry.git_sha1}"', "Content-Length": str(entry.size),
               "Content-Type": "application/octet-stream"}
    if entry.lfs:
        headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
    payload = hub.blob(entry.sha256) if call.method == "GET" else b""
    return 200, headers, payload
