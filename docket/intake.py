"""Intake: every file in ``spool/incoming`` is accepted or set aside, never lost.

A pass reads the complete files, decides each one inside one transaction (accepted as a
new version, a duplicate of one, or rejected with its reasons), commits, and only then
moves files: accepted ones are archived to ``spool/accepted/<name>/v<N>.yaml`` and
removed from incoming; the others go to ``spool/rejected/`` beside a ``.error`` file. A
crash between the commit and the moves is finished by the next pass, which recognises
each file by its identity (device, inode, size, mtime, content hash) and does not decide
it twice.

A file still being written (a plain ``cp`` into the spool) is left for later: on Linux a
read lease tells whether anyone has it open for writing; where leases are unavailable
(network filesystems, files owned by others) a file must be ``settle_s`` old.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import pwd
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docket.attachments import AttachmentError, check_attachment
from docket.capabilities import CapabilityCache, CapabilityError, resolve_parameters
from docket.documents import (
    DocumentError,
    Outcome,
    ParsedDocument,
    Problem,
    parse_document,
    spec_sha256,
)
from docket.errors import Invalid
from docket.fileio import atomic_write, fsync_dir, inside, is_disk_error, safe_join
from docket.home import Home
from docket.rules import Accepted, Rules
from docket.store import Store, now

__all__ = ["Intake", "IntakeReport", "check_document", "is_candidate", "file_owner",
           "DECISIONS_DIR"]

# Accepted decisions are archived here; request names cannot start with "_".
DECISIONS_DIR = "_decisions"

log = logging.getLogger("docket.intake")

BATCH_SIZE = 500
_F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
_TEMP_SUFFIXES = (".tmp", ".part", ".swp", ".swx", "~", ".partial", ".crdownload")
_YAML_SUFFIXES = (".yaml", ".yml")


@dataclass
class IntakeReport:
    outcomes: list[Outcome] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # files not yet complete

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


def is_candidate(name: str) -> bool:
    """Dotfiles, editor backups and temporary names are never read."""
    return not (name.startswith((".", "#")) or name.endswith(_TEMP_SUFFIXES))


def file_owner(st: os.stat_result) -> str:
    return _user_name(st.st_uid)


@functools.lru_cache(maxsize=256)
def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# what _read_complete returns for a file to leave for the next pass
WAITING = object()


@dataclass(frozen=True)
class Unreadable:
    """What _read_complete returns for a file it may not or cannot read."""

    reason: str


def _read_complete(path: Path, st: os.stat_result, settle_s: float,
                   limit_bytes: int) -> bytes | object | None:
    """The whole content of ``path`` once no process has it open for writing.

    Returns ``WAITING`` while it is being written (or changed while read), an
    ``Unreadable`` when it cannot be opened or read, None when it vanished. One open
    serves the check and the read: this runs for every document.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Unreadable(f"cannot be opened: {exc.strerror}")
    try:
        try:
            fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_RDLCK)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EBUSY):
                return WAITING  # someone is writing it right now
            # no lease here (not our file, or a network filesystem): judge by quiet time
            if time.time() - st.st_mtime < settle_s:
                return WAITING
        else:
            fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)
        chunks = []
        left = limit_bytes + 1
        try:
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
        except OSError as exc:
            return Unreadable(f"cannot be read: {exc.strerror}")
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            return WAITING  # it changed while we read it
        return b"".join(chunks)
    finally:
        os.close(fd)


_NOT_REGULAR = {stat.S_IFLNK: "a symlink (a link could point anywhere)",
                stat.S_IFDIR: "a directory", stat.S_IFSOCK: "a socket",
                stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
                stat.S_IFBLK: "a block device"}


def _not_regular(st: os.stat_result) -> str | None:
    """Why a spool entry is no document, or None for a regular file."""
    if stat.S_ISREG(st.st_mode):
        return None
    kind = _NOT_REGULAR.get(stat.S_IFMT(st.st_mode), "not a regular file")
    return f"spool files must be regular files; this is {kind}"


@dataclass
class Checked:
    """A document that passed every check that needs no database."""

    parsed: ParsedDocument
    parameters: dict[str, Any]
    attachments: list[Path]


def check_document(raw: bytes, home: Home, capabilities: CapabilityCache,
                   filename: str | None = None) -> Checked:
    """Every check that needs no database: YAML, schema, capability, parameters, paths.

    Raises ``DocumentError`` listing each problem with its line/column or field path.
    This is what ``docket validate`` runs, offline.
    """
    config = home.config
    parsed = parse_document(raw, max_bytes=config.max_document_bytes,
                            max_nodes=config.max_yaml_nodes, filename=filename)
    spec = parsed.model.spec
    if parsed.kind != "CapabilityRequest":
        return Checked(parsed, {}, [])  # checked against the state when applied

    def problem(message: str, *path: Any) -> Problem:
        line, col = parsed.where("spec", *path)
        text = ".".join(["spec", *(str(p) for p in path if not isinstance(p, int))])
        for p in path:
            if isinstance(p, int):
                text += f"[{p}]"
        return Problem(message, path=text, line=line, column=col)

    try:
        capability = capabilities.get(spec.capability)
    except CapabilityError as exc:
        raise DocumentError([problem(str(exc), "capability")]) from None
    parameters, param_problems = resolve_parameters(capability, dict(spec.parameters))
    problems = []
    for p in param_problems:
        name = p.path.rsplit(".", 1)[-1] if p.path else None
        problems.append(problem(p.message, "parameters", *([name] if name else [])))
    attachments = []
    for i, name in enumerate(spec.files):
        try:
            path = safe_join(home.attachments, name)
        except Invalid as exc:
            problems.append(problem(exc.what, "files", i))
            continue
        if not path.exists():
            problems.append(problem(f"file {name!r} does not exist in {home.attachments}",
                                    "files", i))
            continue
        try:
            check_attachment(path)
        except AttachmentError as exc:
            problems.append(problem(str(exc), "files", i))
            continue
        attachments.append(path)
    if spec.output_dir is not None:
        try:
            _check_output_dir(spec.output_dir, home)
        except Invalid as exc:
            problems.append(problem(str(exc), "output_dir"))
    if problems:
        raise DocumentError(problems)
    return Checked(parsed, parameters, attachments)


def _check_output_dir(value: str, home: Home) -> None:
    path = Path(value)
    roots = [home.work, *(Path(r) for r in home.config.output_roots)]
    if not path.is_absolute():
        safe_join(home.work, value)
        return
    if ".." in path.parts:
        raise Invalid(f"output_dir {value!r} contains '..'")
    try:
        path.resolve()
    except (RuntimeError, OSError) as exc:  # RuntimeError: Python < 3.13's ELOOP
        raise Invalid(f"output_dir {value!r} cannot be resolved (a symlink loop?): {exc}",
                      "name a real directory") from None
    if not any(inside(path, root) for root in roots):
        raise Invalid(f"output_dir {value!r} is outside the allowed roots "
                      f"({', '.join(str(r) for r in roots)})",
                      "ask an operator to add it to output_roots in docket.yaml")


def repair_archive(store: Store, accepted: Path, since: str | None = None) -> list[Path]:
    """Write archive copies missing or torn since a crash, from the versions table.

    Archive copies are written without fsync or a temporary name (the database commit is
    what makes a version safe), so a power cut can lose a recent one or leave it empty or
    short; this puts it back.
    """
    written = []
    for version in store.versions_since(since or ""):
        archive = accepted / version.request / f"v{version.number}.yaml"
        try:
            intact = archive.read_bytes() == version.document.encode()
        except FileNotFoundError:
            intact = False
        if not intact:
            atomic_write(archive, version.document, mode=0o444, durable=False)
            written.append(archive)
    return written


def _archive_copy(path: Path, document: bytes) -> None:
    """The immutable archive copy of an accepted version, unless it is there already.

    Created under its own name, read-only from the start: no temporary name, rename or
    chmod (a third of intake's file work). A reader never sees it change later, since it
    is written once; a copy torn by a power cut is rewritten by ``repair_archive``, and
    one this write leaves half-done is removed, so the file is owed and written again.
    """
    try:
        os.mkdir(path.parent)  # Path.mkdir's checks cost as much as the call, 10,000 times
    except FileExistsError:
        pass
    except FileNotFoundError:  # the archive itself is new
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
    except FileExistsError:
        return  # written before a crash, or by an earlier pass
    try:
        view = memoryview(document)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    os.close(fd)


def _fitting_name(folder: Path, name: str, tag: str | None = None) -> str:
    """``name`` (plus ``.tag``), shortened so that ``<name>.error`` and the temporary name
    ``atomic_write`` uses for it fit the filesystem's limit on file names.

    A shortened name keeps its start and its suffix and gains a hash of the whole name,
    so two long names never meet in one.
    """
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    room = limit - len(".error") - 16  # atomic_write: ".<name>.<8 random>.tmp"
    full = f"{name}.{tag}" if tag else name
    if len(full.encode()) <= room:
        return full
    stem, dot, suffix = name.rpartition(".")
    suffix = f".{suffix}" if dot and len(suffix) <= 8 else ""
    stem = stem if suffix else name
    digest = hashlib.sha256(full.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    keep = stem.encode("utf-8", "surrogateescape")[:room - len(suffix) - 14]
    return keep.decode("utf-8", "ignore") + f"~{digest}" + suffix


def _document_name(raw: bytes | None) -> str | None:
    from docket.documents import load_yaml

    with contextlib.suppress(Exception):
        data, _ = load_yaml(raw or b"")
        return str(data["metadata"]["name"])
    return None


class Intake:
    def __init__(self, home: Home, store: Store, rules: Rules,
                 capabilities: CapabilityCache) -> None:
        self.home = home
        self.store = store
        self.rules = rules
        self.capabilities = capabilities
        self._owing: set[str] = set()  # identities with an intake_files row, this batch
        # identities of this batch intake met before (looked up once for the batch), and
        # those decided in it; a file whose identity is not here is new: nothing to look up
        self._met: set[str] = set()

    def roles_of(self, user: str) -> set[str]:
        """The user's analyst roles from the home's analysts.yaml (re-read when it changes)."""
        from docket.analysts import load_analysts
        from docket.decisions import Refused
        from docket.errors import DocketError

        try:
            return set(load_analysts(self.home.root).roles_of(user))
        except DocketError as exc:  # a broken analysts.yaml refuses decisions, loudly
            raise Refused(f"cannot check roles: {exc}") from None

    # GitOps ----------------------------------------------------------------------

    def scan_git(self, source: Any) -> IntakeReport:
        """Decide the committed documents of a git checkout that changed since last time.

        Nothing in the checkout is moved or edited: accepted documents are archived in the
        spool as usual, rejected ones are copied to ``spool/rejected/git/`` beside their
        ``.error``. A file that disappeared changes nothing but is noted on its request.
        """
        from docket.analysts import load_analysts

        report = IntakeReport()
        scan = source.scan(self.store.git_blobs())
        analysts = load_analysts(self.home.root)
        decided: list[tuple[Outcome, Any]] = []
        with self.store.transaction():
            for doc in scan.changed:
                actor = analysts.actor_for_author(doc.author_name, doc.author_email)
                if doc.problem:
                    outcome = self._reject(doc.path, [doc.problem], actor)
                else:
                    outcome, _failed = self._alone(doc.path, actor, functools.partial(
                        self._evaluate, Path(doc.path), doc.raw, f"git:{doc.blob}", actor,
                        source_file=doc.path,
                        source={"commit": doc.commit, "author": doc.author}))
                self.store.note_git_file(doc.path, doc.blob, doc.commit, outcome.status,
                                         outcome.request or self.store.git_request(doc.path))
                decided.append((outcome, doc))
            for path in scan.vanished:
                request = self.store.git_request(path)
                if request:
                    self.store.record("request.source_removed", request=request,
                                      path=path, commit=scan.head)
                self.store.forget_git_file(path)
        for outcome, doc in decided:
            try:  # each copy on its own: one that fails does not stop the others
                self._keep_copy(outcome, doc)
            except Exception as exc:  # noqa: BLE001 - the decision is committed anyway
                self.log_error(f"{doc.path}: {outcome.status}, but keeping its copy failed",
                               exc)
            report.outcomes.append(outcome)
        return report

    def _keep_copy(self, outcome: Outcome, doc: Any) -> None:
        if outcome.status in ("accepted", "applied"):
            if outcome.status == "accepted":
                archive = (self.home.accepted / str(outcome.request)
                           / f"v{outcome.version}.yaml")
            else:
                archive = self.home.accepted / DECISIONS_DIR / f"{outcome.document}.yaml"
            if not archive.exists():
                atomic_write(archive, doc.raw, mode=0o444)
            outcome.moved_to = str(archive)
            return
        target = self.home.rejected / "git" / doc.path.replace("/", "__")
        header = "duplicate" if outcome.status == "duplicate" else "rejected"
        atomic_write(target.with_name(target.name + ".error"), (
            f"{doc.path} (commit {doc.commit}, {doc.author}): {header} at {now()}\n"
            + "".join(f"  - {r}\n" for r in outcome.reasons)))
        atomic_write(target, doc.raw)
        outcome.moved_to = str(target)

    # the pass -------------------------------------------------------------------

    def scan(self, names: list[str] | None = None) -> IntakeReport:
        """One pass over ``spool/incoming`` (or just ``names`` in it)."""
        report = IntakeReport()
        incoming = self.home.incoming
        if names is None:
            # owners' names are looked up again each full pass (every poll interval of a
            # watcher): a long-lived watcher must not keep the name of a deleted user for
            # a new user given the same uid. Not on each drop's own pass: that re-read
            # /etc/passwd on the way to every acceptance.
            _user_name.cache_clear()
            try:
                names = sorted(os.listdir(incoming))
            except FileNotFoundError:
                return report
        candidates: list[tuple[Path, os.stat_result]] = []
        for name in names:
            if not is_candidate(name):
                continue
            path = incoming / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode) and not name.endswith(_YAML_SUFFIXES):
                continue  # a folder of someone's; one named like a document is reported
            candidates.append((path, st))
        for start in range(0, len(candidates), BATCH_SIZE):
            report.outcomes.extend(self._batch(candidates[start:start + BATCH_SIZE],
                                               report.waiting))
        return report

    def _batch(self, files: list[tuple[Path, os.stat_result]],
               waiting: list[str]) -> list[Outcome]:
        read: list[tuple[Path, os.stat_result, bytes | None, str, str | None]] = []
        config = self.home.config
        for path, st in files:
            raw: bytes | None = None
            problem = _not_regular(st)
            if problem is None:
                content = _read_complete(path, st, config.settle_s,
                                         config.max_document_bytes)
                if content is None:
                    continue
                if isinstance(content, Unreadable):
                    # ctime: a chmod that fixes the file starts the wait again
                    if time.time() - st.st_ctime < config.unreadable_s:
                        waiting.append(path.name)
                        continue
                    problem = (f"the file {content.reason} (for more than "
                               f"{config.unreadable_s:g} s); fix it and drop it again")
                elif content is WAITING:
                    waiting.append(path.name)
                    continue
                else:
                    assert isinstance(content, bytes)
                    raw = content
            digest = hashlib.sha256(raw or b"").hexdigest()
            identity = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{digest[:16]}"
            read.append((path, st, raw, identity, problem))
        decided: list[tuple[Outcome, Path, bytes | None, str]] = []
        self._owing = set()
        # One transaction for the batch (one fsync, not one per document), one savepoint
        # per document: a document that breaks its decision is rolled back alone and
        # rejected; a full disk or a broken database stops the batch before the commit,
        # which leaves every file where it was for the next pass.
        with self.store.batch():
            self._met = self.store.met_identities([r[3] for r in read])
            for path, st, raw, identity, problem in read:
                outcome = self._decide_alone(path, st, raw, identity, problem)
                decided.append((outcome, path, raw, identity))
        outcomes, moved = [], []
        for outcome, path, raw, identity in decided:
            # each move on its own: one that fails is owed (intake_files keeps it) and
            # retried next pass, and the others go ahead
            try:
                self._move(outcome, path, raw)
                moved.append(identity)
            except Exception as exc:  # noqa: BLE001 - whatever it is, the others go on
                outcome.reasons = [*outcome.reasons, f"not yet moved out of the spool: {exc}"]
                self.log_error(f"{path.name}: {outcome.status}, but moving it failed "
                                "(retried next pass)", exc)
            outcomes.append(outcome)
        # only files with an intake_files row need forgetting: an accepted one has none
        self.store.settle([i for i in moved if i in self._owing])
        return outcomes

    def _decide_alone(self, path: Path, st: os.stat_result, raw: bytes | None,
                      identity: str, problem: str | None) -> Outcome:
        """``_decide`` in a savepoint: any failure but the machine's rejects this file."""
        outcome, failed = self._alone(path.name, file_owner(st),
                                      lambda: self._decide(path, st, raw, identity, problem))
        if failed:
            self._owe(identity, outcome)
        return outcome

    def _alone(self, name: str, actor: str, decide: Any) -> tuple[Outcome, bool]:
        """``decide()`` in a savepoint of the batch's transaction.

        Any failure but the machine's rolls back only this document, which is rejected
        with the reason (the traceback goes to the home's log): returns that rejection
        and True. The machine's failures (a full disk, the database) stop the batch, so
        nothing of it is committed and every file waits for the next pass.
        """
        try:
            with self.store.savepoint("document"):
                outcome = decide()
        except Exception as exc:
            if isinstance(exc, sqlite3.Error) or is_disk_error(exc):
                raise  # not the document's fault
            self.log_error(f"{name}: internal error while reading it", exc)
            return self._reject(name, [
                f"internal error while reading it: {type(exc).__name__}: {exc} (a bug in "
                "docket, not necessarily in the document; the traceback is in "
                f"{self.home.log_file})"], actor), True
        return outcome, False

    def log_error(self, what: str, exc: BaseException) -> None:
        """Into the home's log with the traceback (and to the logger, without it)."""
        import traceback

        log.error("%s: %s: %s", what, type(exc).__name__, exc)
        text = "".join(traceback.format_exception(exc))
        with contextlib.suppress(OSError):  # a full disk must not turn this into a crash
            self.home.log_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.home.log_file, "a") as fh:
                fh.write(f"{now()} {what}\n{text}\n")

    def repair_archive(self, since: str | None = None) -> list[Path]:
        return repair_archive(self.store, self.home.accepted, since)

    def _decide(self, path: Path, st: os.stat_result, raw: bytes | None,
                identity: str, problem: str | None = None) -> Outcome:
        """Decide one file inside the pass's transaction."""
        if identity in self._met:
            owed = self.store.owed(identity)
            if owed is not None:  # decided before a crash; only the move is owed
                self._owing.add(identity)
                return Outcome(path.name, owed["status"], owed["request"], owed["version"],
                               reasons=json.loads(owed["error"] or "[]"))
            done = self.store.version_from(identity)
            if done is not None:
                return Outcome(path.name, "accepted", done.request, done.number)
        self._met.add(identity)  # a hard link to this file, later in the batch, is met
        actor = file_owner(st)
        if problem is not None:
            outcome = self._reject(path.name, [problem], actor)
        else:
            outcome = self._evaluate(path, raw, identity, actor)
        if outcome.status != "accepted":  # an accepted file is known by its version's
            self._owe(identity, outcome)  # source_identity (above): nothing more to note
        return outcome

    def _owe(self, identity: str, outcome: Outcome) -> None:
        """Note the decision until the file is moved (a crash between is finished later)."""
        self._owing.add(identity)
        self.store.owe(identity, outcome.status, outcome.request, outcome.version,
                       outcome.reasons)

    def _evaluate(self, path: Path, raw: bytes | None, identity: str, actor: str,
                  source_file: str | None = None,
                  source: dict[str, Any] | None = None) -> Outcome:
        name = source_file or path.name
        if raw is None:
            return self._reject(name, ["spool files must be regular files, not symlinks"],
                                actor)
        if not name.endswith((*_YAML_SUFFIXES, ".json")):
            return self._reject(name, ["spool files must end in .yaml or .yml (or .json: an "
                                       "EWMS workflow request, or CHIME work)"], actor)
        try:
            checked = check_document(raw, self.home, self.capabilities, filename=name)
        except DocumentError as exc:
            return self._reject(name, [str(p) for p in exc.problems], actor)
        model = checked.parsed.model
        submitter = model.metadata.submitter
        if submitter is not None and submitter != actor:
            return self._reject(name, [
                f"metadata.submitter {submitter!r} is not the owner of the file ({actor!r}); "
                "docket takes the actor from the file, so leave submitter out or make it "
                "match"], actor)
        if checked.parsed.kind in ("TaskWorkflow", "Work"):  # docs/tasks.md, docs/work.md
            from docket.tasks import accept_workflow
            from docket.work import deposit_document

            accept = accept_workflow if checked.parsed.kind == "TaskWorkflow" else deposit_document
            return accept(self, name, checked.parsed, raw, identity, actor, source)
        if checked.parsed.kind != "CapabilityRequest":
            return self._apply_decision(name, checked.parsed, raw, actor)
        request = model.metadata.name
        spec = model.spec.model_dump(mode="json")
        capability = self.capabilities.get(model.spec.capability)
        sha = spec_sha256(spec)
        existing, duplicate, refusal = self.rules.assess(capability, request, sha, actor)
        if refusal is not None:
            return self._reject(name, [refusal], actor)
        if duplicate is not None:
            reason = (f"duplicate: identical to {request} version {duplicate.version} "
                      f"(accepted {duplicate.accepted_at}); nothing changed")
            self.store.record("document.duplicate", request=request, version=duplicate.version,
                              actor=actor, file=name)
            return Outcome(name, "duplicate", request, duplicate.version, reasons=[reason])
        accepted: Accepted = self.rules.accept(
            capability, request, spec, checked.parameters, sha, raw.decode(), name, identity,
            actor, new_request=existing is None, **(source or {}))
        return Outcome(name, "accepted", request, accepted.version, accepted.execution)

    def _apply_decision(self, name: str, parsed: ParsedDocument, raw: bytes,
                        actor: str) -> Outcome:
        from docket.decisions import Refused, apply_decision

        model = parsed.model
        try:
            with self.store.transaction(), self.store.savepoint("decision"):
                result = apply_decision(self.rules, parsed.kind, model.metadata.name,
                                        model.spec, actor, self.roles_of)
        except Refused as exc:
            # the refusal, not half a decision, is what the record keeps
            self.store.record("decision.refused", actor=actor,
                              request=getattr(model.spec, "request", None), file=name,
                              kind=parsed.kind, reason=str(exc))
            return self._reject(name, [str(exc)], actor)
        return Outcome(name, "applied", result.get("request"), result.get("version"),
                       result.get("execution"), reasons=[result["outcome"]],
                       document=model.metadata.name)

    def _reject(self, name: str, reasons: list[str], actor: str) -> Outcome:
        self.store.record("document.rejected", actor=actor, file=name, reasons=reasons)
        return Outcome(name, "rejected", reasons=reasons)

    # after the commit -------------------------------------------------------------

    def _move(self, outcome: Outcome, path: Path, raw: bytes | None) -> None:
        if outcome.status == "applied":
            name = outcome.document or _document_name(raw) or path.stem
            archive = self.home.accepted / DECISIONS_DIR / f"{name}.yaml"
            if not archive.exists():
                atomic_write(archive, raw or b"", mode=0o444)
            outcome.moved_to = str(archive)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            fsync_dir(path.parent)
            return
        if outcome.status == "accepted":
            # The commit made the version safe: the copy and the unlink need no fsync (a
            # file back after a power cut is recognised by its identity; a lost copy is
            # rewritten from the database by repair_archive). The copy comes first, so a
            # full disk leaves the file in the spool, owed, rather than in neither place.
            archive = self.home.accepted / str(outcome.request) / f"v{outcome.version}.yaml"
            document = raw
            if document is None:
                version = self.store.version(str(outcome.request), int(outcome.version or 0))
                document = version.document.encode() if version else b""
            _archive_copy(archive, document)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            outcome.moved_to = str(archive)
            return
        rejected = self.home.rejected
        rejected.mkdir(parents=True, exist_ok=True)
        target = rejected / _fitting_name(rejected, path.name)
        if target.exists() or target.is_symlink():
            stem = hashlib.sha256(str(path.lstat().st_ino).encode() + (raw or b"")).hexdigest()
            target = rejected / _fitting_name(rejected, path.name, stem[:8])
        header = ("duplicate" if outcome.status == "duplicate" else "rejected")
        text = f"{path.name}: {header} at {now()}\n" + "".join(
            f"  - {r}\n" for r in outcome.reasons)
        atomic_write(target.with_name(target.name + ".error"), text)
        os.replace(path, target)
        fsync_dir(rejected)
        fsync_dir(path.parent)
        outcome.moved_to = str(target)
