"""Documents that live in a git checkout (GitOps): pull it, and see what changed since.

In this mode the spool is a clone that cron or the watcher updates with
``git pull --ff-only``; docket never moves, edits or writes files there. ``pull`` brings
it up to date or, when it cannot (a conflict, a non-fast-forward, no network), leaves
the checkout exactly as it was and says why. ``scan`` compares what is committed at
``HEAD`` with what docket last processed and returns the documents to decide.

What counts is what is committed, not what lies in the working tree: the listing and
the contents come from git's objects (``git ls-tree`` of ``HEAD``, ``git cat-file``), so
a half-written file, a local edit or a staged change is never read. Each changed
document carries the commit that gave the file its current content, and that commit's
author, who is the document's actor. With ``require_signed`` a document whose commit has
no good signature (``%G?`` other than ``G``), or whose signer's email is not the author's,
carries a ``problem`` and must be rejected: an author email is whatever the committer typed,
and only the signature proves who it was.

Speed on a repository of thousands of files: one ``ls-tree`` gives every blob id; only
files whose blob differs from the one docket knows go further, through one ``git log``
walk (stopped as soon as every changed file's commit is found), one signature check of
just those commits, and one ``cat-file --batch`` for their contents.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from docket.errors import ExternalFailure, Invalid, NotFound

__all__ = [
    "GitSource",
    "GitDocument",
    "PullResult",
    "Scan",
    "is_document_path",
    "SIGNATURE_MEANINGS",
]

log = logging.getLogger("docket.gitsource")

_DOCUMENT_SUFFIXES = (".yaml", ".yml")
_FILE_MODES = (b"100644", b"100755")  # not symlinks (120000) or submodules (160000)
_COMMIT_MARK = b"C"
_READ_CHUNK = 1 << 16
_MAX_MESSAGE_CHARS = 600

# git's %G? letters, as a DA would want them explained
SIGNATURE_MEANINGS = {
    "G": "has a good signature",
    "B": "has a bad signature",
    "U": "is signed with a key whose validity is unknown (trust the key in the keyring "
         "docket uses)",
    "X": "has an expired signature",
    "Y": "is signed with a key that has expired",
    "R": "is signed with a revoked key",
    "E": "has a signature that cannot be checked (is the signer's public key in the "
         "keyring docket uses?)",
    "N": "is not signed",
}


def is_document_path(path: str) -> bool:
    """``*.yaml``/``*.yml`` files outside dot-directories, and not dotfiles themselves."""
    return path.endswith(_DOCUMENT_SUFFIXES) and not any(
        part.startswith(".") for part in path.split("/"))


@dataclass(frozen=True)
class PullResult:
    """What ``pull`` did. ``ok`` is False when the checkout could not be brought up to date;
    it is then exactly as it was (``before == after``) and ``message`` says why."""

    ok: bool
    before: str | None
    after: str | None
    message: str
    pulled: bool = True  # False when there was nothing to pull from (no upstream)

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "before": self.before, "after": self.after,
                "message": self.message, "pulled": self.pulled, "changed": self.changed}


@dataclass(frozen=True)
class GitDocument:
    """One committed document whose content docket has not processed yet."""

    path: str  # relative to the source directory, '/'-separated
    raw: bytes  # the committed content (empty when ``problem`` says it is too large)
    blob: str  # git's id of the content: the identity to remember in ``known``
    size_bytes: int
    commit: str | None  # the commit that gave the file this content
    author_name: str | None
    author_email: str | None
    authored_at: str | None  # ISO 8601, as the author's clock said
    signature: str = ""  # git's %G? letter for ``commit`` (N: not signed)
    signing_key: str = ""
    signer: str = ""
    problem: str | None = None  # why the core must reject it unread, if it must

    @property
    def signed(self) -> bool:
        """True when ``commit`` carries a good signature from a trusted key."""
        return self.signature == "G"

    @property
    def author(self) -> str:
        """``Name <email>``, as git shows an author."""
        if self.author_name is None:
            return "unknown author"
        return f"{self.author_name} <{self.author_email}>"

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "blob": self.blob, "size_bytes": self.size_bytes,
                "commit": self.commit, "author_name": self.author_name,
                "author_email": self.author_email, "authored_at": self.authored_at,
                "signature": self.signature, "signing_key": self.signing_key,
                "signer": self.signer, "signed": self.signed, "problem": self.problem}


@dataclass(frozen=True)
class Scan:
    """What ``scan`` found at commit ``head``.

    ``changed`` are new files and files with new content, oldest commit first (so a
    request is decided before a decision about it committed later); ``vanished`` are
    known files that are no longer committed, which by itself changes nothing.
    """

    head: str | None
    changed: list[GitDocument] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    unchanged: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"head": self.head, "changed": [d.as_dict() for d in self.changed],
                "vanished": self.vanished, "unchanged": self.unchanged}


@dataclass(frozen=True)
class _Commit:
    sha: str
    author_name: str
    author_email: str
    authored_at: str


class GitSource:
    """A git checkout whose committed ``*.yaml`` files are docket documents.

    ``repo_dir`` may be the top of the checkout or a directory inside it; only documents
    under it count, and their paths are relative to it.
    """

    def __init__(self, repo_dir: Path | str, *, require_signed: bool = False,
                 max_bytes: int = 1_048_576, timeout_s: float = 300.0,
                 git: str = "git") -> None:
        self.repo_dir = Path(repo_dir).absolute()
        self.require_signed = require_signed
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.git = git
        if not self.repo_dir.is_dir():
            raise NotFound(f"{self.repo_dir} does not exist or is not a directory",
                           "clone the repository first: git clone URL REPO_DIR")
        rc, out, err = self._run(["rev-parse", "--is-inside-work-tree", "--show-prefix"],
                                 check=False)
        if rc != 0:
            text = _text(err)
            if "dubious ownership" in text:
                raise ExternalFailure(
                    f"git refuses to read {self.repo_dir}: it belongs to another user",
                    f"run: git config --global --add safe.directory {self.repo_dir}")
            raise NotFound(f"{self.repo_dir} is not a git checkout ({_summary(text)})",
                           "clone the repository first: git clone URL REPO_DIR")
        lines = out.decode(errors="surrogateescape").splitlines()
        if not lines or lines[0] != "true":
            raise Invalid(f"{self.repo_dir} is inside a bare repository or a .git directory",
                          "give docket a checkout (git clone URL REPO_DIR)")
        self.prefix = os.fsencode(lines[1]) if len(lines) > 1 else b""

    # running git --------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # messages in English for the report, and never a prompt nobody will answer
        env.update(LC_ALL="C", LANGUAGE="C", GIT_TERMINAL_PROMPT="0")
        return env

    def _popen(self, args: list[str], stdin: Any, stderr: IO[bytes]) -> subprocess.Popen:
        try:
            return subprocess.Popen(
                [self.git, *args], cwd=self.repo_dir, env=self._env(), stdin=stdin,
                stdout=subprocess.PIPE, stderr=stderr,
                # own process group: a timeout stops git and its ssh/http helpers too;
                # no controlling terminal: ssh cannot stop to ask for a password
                start_new_session=True)
        except FileNotFoundError:
            raise ExternalFailure(f"{self.git} is not installed or not on PATH",
                                  "install git") from None

    def _run(self, args: list[str], *, input: bytes | None = None, check: bool = True,
             timeout: bool = True) -> tuple[int, bytes, bytes]:
        with tempfile.TemporaryFile() as err:
            proc = self._popen(args, subprocess.PIPE if input is not None
                               else subprocess.DEVNULL, err)
            try:
                out, _ = proc.communicate(input, timeout=self.timeout_s if timeout else None)
            except subprocess.TimeoutExpired:
                _stop(proc)
                raise ExternalFailure(
                    f"git {args[0]} in {self.repo_dir} did not finish in {self.timeout_s:g} s",
                    "check the network and the remote; the next tick tries again") from None
            err.seek(0)
            stderr = err.read()
        if check and proc.returncode != 0:
            raise ExternalFailure(f"git {' '.join(args[:2])} failed in {self.repo_dir}: "
                                  f"{_summary(_text(stderr))}")
        return proc.returncode, out, stderr

    def head(self) -> str | None:
        """The commit checked out, or None in a repository with no commit yet."""
        rc, out, _ = self._run(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
                               check=False)
        return out.decode().strip() if rc == 0 else None

    # pulling ------------------------------------------------------------------------

    def pull(self) -> PullResult:
        """``git pull --ff-only``: bring the checkout up to date, or leave it as it was.

        Run before each ``scan``; a failure is reported in the result (never raised), and
        the next call simply tries again.
        """
        before = self.head()
        rc, out, _ = self._run(["rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{u}"],
                               check=False)
        if rc != 0:
            detached = self._run(["symbolic-ref", "-q", "HEAD"], check=False)[0] != 0
            why = ("HEAD is detached (not on a branch)" if detached else
                   "no upstream branch is configured")
            return PullResult(True, before, before, f"{why}; nothing to pull", pulled=False)
        upstream = out.decode().strip()
        # 'git pull --ff-only' in its two steps, so that a timeout can only ever stop the
        # download (harmless), never the update of the working tree
        try:
            rc, out, err = self._run(["fetch"], check=False)
        except ExternalFailure as exc:  # the timeout
            return PullResult(False, before, self.head(), f"git pull from {upstream} failed: "
                              f"{exc}")
        if rc == 0:
            rc, out, err = self._run(["merge", "--ff-only", "--no-edit", "@{u}"], check=False,
                                     timeout=False)
        after = self.head()
        if rc != 0:
            message = f"git pull from {upstream} failed: {_summary(_text(err + out))}"
            if after != before:  # git promises otherwise; say so rather than hide it
                message += f" (and HEAD moved from {before} to {after})"
            log.warning("%s: %s", self.repo_dir, message)
            return PullResult(False, before, after, message)
        if after == before:
            return PullResult(True, before, after, f"already up to date with {upstream}")
        return PullResult(True, before, after,
                          f"fast-forwarded to {upstream}: {_short(before)}..{_short(after)}")

    # scanning -----------------------------------------------------------------------

    def scan(self, known: Mapping[str, str]) -> Scan:
        """Committed documents whose blob differs from ``known`` (path -> blob id)."""
        head = self.head()
        if head is None:
            return Scan(None, [], sorted(known), 0)
        current = self._listing(head)
        vanished = sorted(p for p in known if p not in current)
        wanted = {p: entry for p, entry in current.items() if known.get(p) != entry[0]}
        if not wanted:
            return Scan(head, [], vanished, len(current))
        origins, commits = self._origins(head, {self.prefix + os.fsencode(p): blob
                                                for p, (blob, _size) in wanted.items()})
        shallow = self._shallow_edges()
        signatures = self._signatures(commits[i].sha for i in set(origins.values()))
        contents = self._blobs(blob for blob, size in wanted.values()
                               if size <= self.max_bytes)
        documents: list[tuple[int, GitDocument]] = []
        for path, (blob, size) in wanted.items():
            index = origins.get(self.prefix + os.fsencode(path))
            commit = commits[index] if index is not None else None
            problem = None
            if size > self.max_bytes:
                problem = (f"the document is {size} bytes, over the limit of "
                           f"{self.max_bytes} bytes")
            if commit is not None and commit.sha in shallow:
                # git shows the edge of a shallow clone as adding every file: whoever
                # really last changed the file is beyond it
                problem = (f"the clone is shallow and the file's history is cut at commit "
                           f"{_short(commit.sha)}, so who last changed it is unknown; run "
                           f"'git fetch --unshallow' in {self.repo_dir}")
                commit = None
            elif commit is None:
                problem = ("no commit in this clone's history gave the file its content, so "
                           "who last changed it is unknown")
            sig = signatures.get(commit.sha, ("", "", "")) if commit else ("", "", "")
            if commit is not None and self.require_signed and sig[0] != "G":
                meaning = SIGNATURE_MEANINGS.get(sig[0], f"has signature status {sig[0]!r}")
                problem = (f"commit {_short(commit.sha)} by {commit.author_name} "
                           f"<{commit.author_email}>, which last changed it, {meaning}; "
                           "this home accepts only signed commits (require_signed)")
            elif (commit is not None and self.require_signed
                  and _signer_email(sig[2]) != commit.author_email.lower()):
                # anyone can write any author email; the signature is what proves who
                problem = (f"commit {_short(commit.sha)}, which last changed it, is authored "
                           f"as {commit.author_name} <{commit.author_email}> but signed by "
                           f"{sig[2] or 'an unnamed key'}; with require_signed the signer "
                           "must be the author")
            documents.append((-1 if index is None else index, GitDocument(
                path=path, raw=contents.get(blob, b"") if size <= self.max_bytes else b"",
                blob=blob, size_bytes=size, commit=commit.sha if commit else None,
                author_name=commit.author_name if commit else None,
                author_email=commit.author_email if commit else None,
                authored_at=commit.authored_at if commit else None,
                signature=sig[0], signing_key=sig[1], signer=sig[2], problem=problem)))
        # git log walks newest first: the highest index is the oldest commit
        documents.sort(key=lambda item: (-item[0], item[1].path))
        return Scan(head, [d for _i, d in documents], vanished, len(current) - len(wanted))

    def _listing(self, head: str) -> dict[str, tuple[str, int]]:
        """Every committed document under the source directory: path -> (blob, size)."""
        _rc, out, _ = self._run(["ls-tree", "-r", "-l", "-z", "--full-tree", head])
        listing: dict[str, tuple[str, int]] = {}
        for entry in out.split(b"\0"):
            if not entry:
                continue
            meta, _, full = entry.partition(b"\t")
            mode, kind, blob, size = meta.split()
            if kind != b"blob" or mode not in _FILE_MODES or not full.startswith(self.prefix):
                continue
            path = os.fsdecode(full[len(self.prefix):])
            if is_document_path(path):
                listing[path] = (blob.decode(), int(size))
        return listing

    def _origins(self, head: str, wanted: dict[bytes, str]
                 ) -> tuple[dict[bytes, int], list[_Commit]]:
        """For each full path, the index (in ``commits``) of the commit that gave it the
        wanted blob: the newest one in ``git log`` order whose diff sets it."""
        args = ["log", "-z", "--raw", "--no-abbrev", "--no-renames",
                # a merge shows only what it resolved itself; other files keep the
                # commit on the branch that changed them
                "--diff-merges=dense-combined",
                "--format=C%x00%H%x00%an%x00%ae%x00%aI", head, "--", "."]
        commits: list[_Commit] = []
        found: dict[bytes, int] = {}
        with tempfile.TemporaryFile() as err:
            proc = self._popen(args, subprocess.DEVNULL, err)
            assert proc.stdout is not None
            complete = False
            try:
                tokens = _tokens(proc.stdout)
                for token in tokens:
                    token = token.lstrip(b"\n")
                    if not token:
                        continue
                    if token == _COMMIT_MARK:
                        sha, name, email, date = [next(tokens) for _ in range(4)]
                        commits.append(_Commit(sha.decode(), _text(name), _text(email),
                                               date.decode()))
                    elif token.startswith(b":"):
                        path = next(tokens)
                        new_blob = token.split(b" ")[-2].decode()
                        if (path in wanted and path not in found
                                and wanted[path] == new_blob and commits):
                            found[path] = len(commits) - 1
                            if len(found) == len(wanted):
                                break
                else:
                    complete = True
            except StopIteration:  # output ended inside a record: judged by the exit code
                complete = True
            finally:
                if not complete:
                    _stop(proc)  # everything is found: the rest of history is not needed
                proc.stdout.close()
                rc = proc.wait()
            if complete and rc != 0:
                err.seek(0)
                raise ExternalFailure(f"git log failed in {self.repo_dir}: "
                                      f"{_summary(_text(err.read()))}")
        return found, commits

    def _shallow_edges(self) -> set[str]:
        """The commits where a shallow clone's history is cut (none in a full clone)."""
        _rc, out, _ = self._run(["rev-parse", "--git-path", "shallow"])
        try:
            text = (self.repo_dir / out.decode().strip()).read_text()
        except FileNotFoundError:
            return set()
        return set(text.split())

    def _signatures(self, shas: Iterable[str]) -> dict[str, tuple[str, str, str]]:
        """commit -> (%G?, signing key, signer) for just these commits."""
        wanted = sorted(set(shas))
        if not wanted:
            return {}
        _rc, out, _ = self._run(["log", "--no-walk=unsorted", "--stdin", "-z",
                                 "--format=%H%x00%G?%x00%GK%x00%GS"],
                                input=("\n".join(wanted) + "\n").encode())
        fields = out.split(b"\0")
        result = {}
        for i in range(0, len(fields) - 3, 4):
            sha, status, key, signer = fields[i:i + 4]
            result[sha.strip().decode()] = (status.decode(), key.decode(), _text(signer))
        return result

    def _blobs(self, blobs: Iterable[str]) -> dict[str, bytes]:
        """blob id -> content, from one ``git cat-file --batch``."""
        wanted = sorted(set(blobs))
        if not wanted:
            return {}
        _rc, out, _ = self._run(["cat-file", "--batch"],
                                input=("\n".join(wanted) + "\n").encode())
        contents: dict[str, bytes] = {}
        pos = 0
        while pos < len(out):
            end = out.index(b"\n", pos)
            header = out[pos:end].split()
            pos = end + 1
            if len(header) != 3:  # "<id> missing": cannot happen for blobs of HEAD
                raise ExternalFailure(f"git cat-file in {self.repo_dir}: "
                                      f"{b' '.join(header).decode(errors='replace')}")
            size = int(header[2])
            contents[header[0].decode()] = out[pos:pos + size]
            pos += size + 1
        return contents


# helpers ----------------------------------------------------------------------------


def _tokens(stream: IO[bytes]) -> Iterator[bytes]:
    """NUL-separated fields of a stream, as they arrive."""
    pending = b""
    while chunk := stream.read1(_READ_CHUNK):  # type: ignore[attr-defined]
        parts = (pending + chunk).split(b"\0")
        pending = parts.pop()
        yield from parts
    if pending:
        yield pending


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _signer_email(signer: str) -> str:
    """The email in a signer's identity (``Name <email>`` from gpg, or an ssh principal)."""
    start, end = signer.rfind("<"), signer.rfind(">")
    email = signer[start + 1:end] if 0 <= start < end else signer
    return email.strip().lower()


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "(no commit)"


def _summary(text: str) -> str:
    """git's message without progress, fetch lines and hints, on one line."""
    kept = []
    for line in text.splitlines():
        stripped = line.strip()
        if (not stripped or stripped.startswith(("From ", "hint:", "Updating ", "remote: "))
                or "->" in stripped and line[:1].isspace()):
            continue
        kept.append(stripped)
    message = " ".join(kept) or "no message from git"
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[:_MAX_MESSAGE_CHARS - 1] + "…"
    return message
