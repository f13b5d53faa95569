"""A small in-memory Hugging Face Hub, for tests only: the part of the HTTP API that `huggingface_hub` uses to create a
repo, push a folder and download a snapshot, served from a thread on 127.0.0.1.

It is a test fixture, not an emulator: one user, one token (plus `visitors`, other users' tokens that only `whoami`
answers for), branch `main` only, LFS (no Xet: clients run with
`HF_HUB_DISABLE_XET=1`), no pagination, no permissions beyond "the token must match". Repositories keep their full
commit history so a test can check what a push did, and `fail_commits` makes the next commit calls fail (HTTP 500)
to test a push that breaks half-way.

    hub = FakeHub().start()      # hub.url, hub.token, hub.env(home) for a client subprocess
    hub.seed("test-user/tiny", {"config.json": b"{}"})
    hub.files("test-user/tiny")  # {path: bytes} at the head of main
    hub.stop()

Endpoints (model repos have no URL prefix, dataset repos `datasets/`; `{type}s` is `models` or `datasets`):
    GET  /api/whoami-v2                               POST /api/repos/create (409 + url when it exists)
    POST /api/validate-yaml                           GET  /api/{type}s/{repo}[/revision/{rev}]
    POST /api/{type}s/{repo}/preupload/{rev}          POST /api/{type}s/{repo}/commit/{rev}   (ndjson)
    GET  /api/{type}s/{repo}/tree/{rev}[/{path}]      POST /api/{type}s/{repo}/paths-info/{rev}
    GET  /api/{type}s/{repo}/commits/{rev}            GET  /api/{type}s/{repo}/refs
    POST /[datasets/]{repo}.git/info/lfs/objects/batch, then PUT /lfs-upload/{oid} with the bytes
    HEAD/GET /[datasets/]{repo}/resolve/{rev}/{path}
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".parquet", ".safetensors", ".bin", ".pt", ".pth", ".gguf", ".arrow")
"""Files the server asks to go through LFS (as the Hub's default .gitattributes does), the rest inline."""
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES).encode()


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
            f"size {len(data)}\n").encode()


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


@dataclass
class Commit:
    oid: str
    title: str
    files: dict[str, bytes]
    """The whole tree at this commit: path -> content."""
    date: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


@dataclass
class Repo:
    type: str
    id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)
    """Oldest first; the last one is the head of `main`."""

    def at(self, revision: str) -> Commit | None:
        if revision in ("main", "refs/heads/main"):
            return self.commits[-1]
        return next((c for c in self.commits if c.oid == revision), None)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class FakeHub:
    def __init__(self, user: str = "test-user", token: str = "hf_fake_token_0123456789abcdef"):
        self.user, self.token = user, token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}
        """LFS objects uploaded so far (sha256 -> bytes), committed or not."""
        self.fail_commits = 0
        """How many of the next commit calls answer HTTP 500 without changing anything."""
        self.log: list[tuple[str, str, int]] = []
        """(method, path, status) of every request."""
        self.visitors: dict[str, str] = {}
        """Other users' tokens (token -> username): `whoami` answers for them, nothing else accepts them."""
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeHub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def env(self, home) -> dict[str, str]:
        """What a client process needs, set before it imports huggingface_hub or datasets."""
        return {"HF_ENDPOINT": self.url, "HF_TOKEN": self.token, "HF_HOME": str(home), "HF_HUB_DISABLE_XET": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}

    # test helpers ------------------------------------------------------------------------------------------------
    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        return dict(self.repo(repo_id, repo_type).at(revision).files)

    def seed(self, repo_id: str, files: dict[str, bytes], repo_type: str = "model") -> str:
        """Create a repo holding `files` (as if someone had pushed them); returns the commit id."""
        repo = self._create(repo_type, repo_id, private=False)
        return self._commit(repo, "Upload files", {**repo.commits[-1].files, **files}).oid

    # state changes (callers hold the lock) -------------------------------------------------------------------------
    def _create(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        repo = self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, private)
        self._commit(repo, "initial commit", {".gitattributes": GITATTRIBUTES})
        return repo

    def _commit(self, repo: Repo, title: str, files: dict[str, bytes]) -> Commit:
        parent = repo.commits[-1].oid if repo.commits else ""
        digest = hashlib.sha1(f"{parent}\n{title}\n{len(repo.commits)}".encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + hashlib.sha1(files[path]).digest())
        commit = Commit(digest.hexdigest(), title, files)
        repo.commits.append(commit)
        return commit

    # request handling ----------------------------------------------------------------------------------------------
    def handle(self, method: str, path: str, headers, body: bytes) -> tuple[int, dict, bytes]:
        url = urlsplit(path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        authorized = headers.get("Authorization") == f"Bearer {self.token}"
        for route_method, pattern, name in ROUTES:
            match = re.fullmatch(pattern, url.path)
            if match and method == route_method:
                args = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
                with self.lock:
                    return getattr(self, name)(method=method, body=body, headers=headers, query=query, auth=authorized,
                                              **args)
        raise HubError(404, f"no route for {method} {url.path}")

    def _repo(self, kind: str, repo: str, auth: bool) -> Repo:
        found = self.repos.get((kind.rstrip("s") if kind else "model", repo))
        if found is None or (found.private and not auth):
            raise HubError(404, f"Repository {repo} not found", "RepoNotFound")
        return found

    def _rev(self, repo: Repo, revision: str | None) -> Commit:
        commit = repo.at(revision or "main")
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def whoami(self, auth, headers, **_):
        visitor = self.visitors.get((headers.get("Authorization") or "").removeprefix("Bearer "))
        if visitor is not None:
            return {"type": "user", "name": visitor, "fullname": visitor.title(), "orgs": [],
                    "avatarUrl": f"/avatars/{visitor}.png"}
        if not auth:
            raise HubError(401, "Invalid credentials in Authorization header")
        return {"type": "user", "name": self.user, "fullname": "Test User", "orgs": [],
                "avatarUrl": f"/avatars/{self.user}.png",  # Gradio's local login reads it
                "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}}}

    def create_repo(self, body, auth, **_):
        if not auth:
            raise HubError(401, "Invalid credentials in Authorization header")
        request = json.loads(body)
        repo_type = request.get("type") or "model"
        repo_id = f"{request.get('organization') or self.user}/{request['name']}"
        url = f"{self.url}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            return 409, {"error": "You already created this repo", "url": url}
        self._create(repo_type, repo_id, private=request.get("visibility") == "private" or bool(request.get("private")))
        return {"url": url, "name": repo_id}

    def validate_yaml(self, **_):
        return {"errors": [], "warnings": []}

    def repo_info(self, kind, repo, revision, auth, **_):
        found = self._repo(kind, repo, auth)
        commit = self._rev(found, revision)
        siblings = [{"rfilename": path, "size": len(data), "blobId": git_blob_oid(data)}
                    for path, data in sorted(commit.files.items())]
        return {"id": repo, "sha": commit.oid, "private": found.private, "siblings": siblings,
                "lastModified": commit.date, "tags": [], "downloads": 0, "likes": 0}

    def preupload(self, kind, repo, revision, body, auth, **_):
        commit = self._rev(self._repo(kind, repo, auth), revision)
        answers = []
        for item in json.loads(body)["files"]:
            path, existing = item["path"], commit.files.get(item["path"])
            mode = "lfs" if is_lfs(path) else "regular"
            oid = None if existing is None else (
                hashlib.sha256(existing).hexdigest() if mode == "lfs" else git_blob_oid(existing))
            answers.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return {"files": answers, "commitOid": commit.oid}

    def lfs_batch(self, repo, prefix, body, auth, **_):
        self._repo("datasets" if prefix else "models", repo, auth)
        objects = []
        for item in json.loads(body)["objects"]:
            entry = {"oid": item["oid"], "size": item["size"]}
            if item["oid"] not in self.lfs:  # already stored: no action, the client skips the upload
                entry["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{item['oid']}"}}
            objects.append(entry)
        return {"transfer": "basic", "objects": objects}

    def lfs_upload(self, oid, body, **_):
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, "the uploaded bytes do not match the oid")
        self.lfs[oid] = body
        return {}

    def commit(self, kind, repo, revision, body, auth, **_):
        if not auth:
            raise HubError(401, "Invalid credentials in Authorization header")
        found = self._repo(kind, repo, auth)
        head = self._rev(found, revision)
        if self.fail_commits > 0:
            self.fail_commits -= 1
            raise HubError(500, "Internal Error - We're working hard to fix this as soon as possible!")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        if header.get("parentCommit") not in (None, head.oid):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files)
        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.lfs:
                    raise HubError(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                files[value["path"]] = self.lfs[value["oid"]]
            elif line["key"] == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif line["key"] == "deletedFolder":
                files = {p: d for p, d in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
        commit = self._commit(found, header["summary"], files)
        prefix = "" if found.type == "model" else f"{found.type}s/"
        return {"commitUrl": f"{self.url}/{prefix}{repo}/commit/{commit.oid}", "commitOid": commit.oid,
                "success": True, "pullRequestUrl": None}

    def _entries(self, commit: Commit, paths=None, under: str = "", recursive: bool = True) -> list[dict]:
        """Tree entries (files and folders) at `commit`: those named in `paths`, or those under a folder."""
        folders = {"/".join(p.split("/")[:i]) for p in commit.files for i in range(1, p.count("/") + 1)}
        entries = []
        for path in sorted(set(commit.files) | folders):
            if paths is not None:
                if path not in paths:
                    continue
            elif under and not path.startswith(under + "/"):
                continue
            elif not recursive and "/" in path[len(under) + 1 if under else 0:]:
                continue
            if path in folders:
                entries.append({"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0,
                                "path": path})
                continue
            data = commit.files[path]
            entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_oid(data)}
            if is_lfs(path):
                entry["oid"] = git_blob_oid(lfs_pointer(data))
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "pointerSize": len(lfs_pointer(data))}
            entries.append(entry)
        return entries

    def tree(self, kind, repo, revision, path, query, auth, **_):
        commit = self._rev(self._repo(kind, repo, auth), revision)
        under = (path or "").strip("/")
        entries = self._entries(commit, under=under, recursive=query.get("recursive", "").lower() == "true")
        if under and not entries:
            raise HubError(404, f"{under} does not exist at {revision}", "EntryNotFound")
        return entries

    def paths_info(self, kind, repo, revision, body, headers, auth, **_):
        commit = self._rev(self._repo(kind, repo, auth), revision)
        if "json" in (headers.get("Content-Type") or ""):
            paths = json.loads(body)["paths"]
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        return self._entries(commit, paths=set(paths))

    def commits(self, kind, repo, revision, auth, **_):
        found = self._repo(kind, repo, auth)
        head = self._rev(found, revision)
        history = found.commits[: found.commits.index(head) + 1]
        return [{"id": c.oid, "title": c.title, "message": "", "authors": [{"user": self.user}], "date": c.date}
                for c in reversed(history)]

    def refs(self, kind, repo, auth, **_):
        head = self._repo(kind, repo, auth).commits[-1]
        return {"branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": head.oid}],
                "converts": [], "tags": [], "pullRequests": []}

    def resolve(self, prefix, repo, revision, path, method, auth, **_):
        found = self._repo("datasets" if prefix else "models", repo, auth)
        commit = self._rev(found, revision)
        if path not in commit.files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        data = commit.files[path]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{git_blob_oid(data)}"', "Content-Length": str(len(data))}
        if is_lfs(path):
            headers.update({"X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Linked-Size": str(len(data))})
        return 200, headers, b"" if method == "HEAD" else data


KIND = r"(?P<kind>models|datasets)"
REPO = r"(?P<repo>[^/]+/[^/]+)"
REV = r"(?P<revision>[^/]+)"
ROUTES = [
    ("GET", r"/api/whoami-v2", "whoami"),
    ("POST", r"/api/repos/create", "create_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("GET", rf"/api/{KIND}/{REPO}(?:/revision/{REV})?", "repo_info"),
    ("POST", rf"/api/{KIND}/{REPO}/preupload/{REV}", "preupload"),
    ("POST", rf"/api/{KIND}/{REPO}/commit/{REV}", "commit"),
    ("GET", rf"/api/{KIND}/{REPO}/tree/{REV}(?P<path>/.*)?", "tree"),
    ("POST", rf"/api/{KIND}/{REPO}/paths-info/{REV}", "paths_info"),
    ("GET", rf"/api/{KIND}/{REPO}/commits/{REV}", "commits"),
    ("GET", rf"/api/{KIND}/{REPO}/refs", "refs"),
    ("POST", rf"/(?P<prefix>datasets/)?{REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
    ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
    ("HEAD", rf"/(?P<prefix>datasets/)?{REPO}/resolve/{REV}/(?P<path>.+)", "resolve"),
    ("GET", rf"/(?P<prefix>datasets/)?{REPO}/resolve/{REV}/(?P<path>.+)", "resolve"),
]


def _handler_for(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # httpx streams file uploads
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            try:
                result = hub.handle(self.command, self.path, self.headers, self._body())
            except HubError as error:
                codes = {"X-Error-Code": error.code} if error.code else {}
                result = (error.status, {"X-Error-Message": error.message, **codes},
                          json.dumps({"error": error.message}).encode())
            if not isinstance(result, tuple):
                result = 200, {"Content-Type": "application/json"}, json.dumps(result).encode()
            elif len(result) == 2:  # (status, json)
                result = result[0], {"Content-Type": "application/json"}, json.dumps(result[1]).encode()
            status, headers, payload = result
            hub.log.append((self.command, self.path, status))
            self.send_response(status)
            headers.setdefault("Content-Length", str(len(payload)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_HEAD = _serve

        def log_message(self, *args) -> None:  # quiet: the hub keeps its own log
            pass

    return Handler
