"""productfetcher: bring products into a directory by locator, safely and resumably.

Two phases. ``plan_fetch`` turns every locator into the list of files it stands for
(source URL, path under the output directory, size and sha256 when known) and fails
before anything is written if a locator cannot be resolved. ``fetch`` then copies the
files with N worker threads.

Locators:

- ``file:///abs/path`` a file, or a directory (every file below it, under its name);
- ``http://...`` / ``https://...`` one file, saved under the last path component;
- ``uid://<archive>/<type>/<name>[/v<N>]`` a product in the archive catalog that
  ``ingest`` writes (``productfetcher.catalog``: a path or an http(s) URL); its files
  land under ``<name>/``, with sizes and sha256 from the catalog.

Every file is written to ``<dest>.part`` and renamed only after its size and sha256
(when known) check out, so the final name never holds a partial or a wrong file. A
``.part`` left by an interrupted run is resumed (HTTP ``Range``). Transient errors
(connection reset or refused, timeouts, a body shorter than its Content-Length, HTTP
5xx/408/429) are retried with exponential backoff. Only the standard library speaks HTTP.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import docket
from docket.errors import (
    ChecksumMismatch,
    DocketError,
    Invalid,
    NotFound,
    PartialFailure,
    UsageError,
)
from docket.fileio import fsync_dir, safe_join, sha256_file
from docket.tools.archive import CATALOG_NAME, Catalog, check_component, parse_locator

__all__ = [
    "FetchSettings",
    "load_settings",
    "Request",
    "PlannedFile",
    "FileOutcome",
    "FetchReport",
    "read_location_file",
    "load_catalog",
    "plan_fetch",
    "present",
    "fetch",
]

log = logging.getLogger("docket.tools.productfetcher")

_CHUNK = 1 << 16
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_USER_AGENT = f"docket-productfetcher/{docket.__version__}"

# (bytes done, bytes in total or None while some size is unknown, what is being fetched)
Progress = Callable[[int, int | None, str], None]


# -- settings -------------------------------------------------------------------------
@dataclass(frozen=True)
class FetchSettings:
    """``productfetcher.*`` in the tools config; see docs/tools/productfetcher.md."""

    catalog: str | None = None
    locator_service: str | None = None  # http(s) URL answering ?locator=... with files
    concurrency: int = 4
    retries: int = 5
    backoff_s: float = 1.0
    timeout_s: float = 60.0


def load_settings(config: Path | None = None, **flags: Any) -> FetchSettings:
    """Flag, then ``DOCKET_PRODUCTFETCHER_*``, then the tools config, then defaults."""
    from docket.tools.config import load_tool_config

    raw = load_tool_config("productfetcher", config, flags)
    defaults = FetchSettings()
    values: dict[str, Any] = {}
    for key, kind, low in (("concurrency", int, 1), ("retries", int, 0),
                           ("backoff_s", float, 0), ("timeout_s", float, 0.001)):
        value = raw.get(key, getattr(defaults, key))
        try:
            number = kind(value)
        except (TypeError, ValueError) as exc:
            raise Invalid(f"productfetcher.{key} {value!r} is not a number",
                          f"give a number >= {low}") from exc
        if number < low:
            raise UsageError(f"productfetcher.{key} is {number}, below {low}",
                             f"give a number >= {low}")
        values[key] = number
    catalog = raw.get("catalog")
    service = raw.get("locator_service")
    if service and urllib.parse.urlparse(str(service)).scheme not in ("http", "https"):
        raise Invalid(f"productfetcher.locator_service {service!r} is not an http(s) URL",
                      "give the service's URL, e.g. https://archive.example.org/locator")
    return FetchSettings(catalog=str(catalog) if catalog else None,
                         locator_service=str(service) if service else None, **values)


# -- the plan -------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    """One thing the user asked for: a locator, optionally with what it must be."""

    locator: str
    dest: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class PlannedFile:
    locator: str
    source: str  # a file:// or http(s):// URL
    dest: str  # path relative to the output directory
    size_bytes: int | None = None
    sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"locator": self.locator, "source": self.source, "dest": self.dest,
                "size_bytes": self.size_bytes, "sha256": self.sha256}


def read_location_file(path: Path) -> list[Request]:
    """Locators from a file: one per line (``#`` comments), or JSON with sizes/sha256.

    JSON is a list (or ``{"files": [...]}``) of locator strings or of objects
    ``{"locator": ..., "dest": "rel/path", "size_bytes": N, "sha256": "..."}``.
    """
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise NotFound(f"location file {path} does not exist",
                       "check the --location-file path") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise Invalid(f"cannot read location file {path}: {exc}", "give a text file") from exc
    stripped = text.lstrip()
    if not stripped.startswith(("[", "{")):
        requests = [Request(line.strip()) for line in text.splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise Invalid(f"location file {path} is not valid JSON ({exc})",
                          "fix the JSON, or list one locator per line") from exc
        entries = data.get("files") if isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise Invalid(f"location file {path} has no list of files",
                          'write [{"locator": ...}, ...] or {"files": [...]}')
        requests = [_request_from_json(entry, f"location file {path}: files[{i}]")
                    for i, entry in enumerate(entries)]
    if not requests:
        raise Invalid(f"location file {path} lists no locators", "add at least one locator")
    return requests


def _request_from_json(entry: Any, where: str) -> Request:
    if isinstance(entry, str):
        return Request(entry)
    if not isinstance(entry, dict) or not isinstance(entry.get("locator"), str):
        raise Invalid(f"{where} has no 'locator'", 'write {"locator": "http://..."}')
    unknown = set(entry) - {"locator", "dest", "size_bytes", "sha256"}
    if unknown:
        raise Invalid(f"{where}: unknown key(s) {sorted(unknown)}",
                      "an entry has only locator, dest, size_bytes and sha256")
    size, sha, dest = entry.get("size_bytes"), entry.get("sha256"), entry.get("dest")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise Invalid(f"{where}: size_bytes {size!r} is not a whole number of bytes",
                      "give the size in bytes, or leave it out")
    if sha is not None and (not isinstance(sha, str) or not _SHA256.match(sha)):
        raise Invalid(f"{where}: sha256 {sha!r} is not 64 hex digits",
                      "give the full sha256, or leave it out")
    if dest is not None and not isinstance(dest, str):
        raise Invalid(f"{where}: dest must be a relative path", 'write "dest": "dir/name"')
    return Request(entry["locator"], dest, size, sha.lower() if sha else None)


def load_catalog(ref: str, settings: FetchSettings) -> tuple[Catalog, Callable[[str], str]]:
    """Read the catalog at a path or URL; return it and a function from an archive-relative
    path to the URL of that file."""
    parsed = urllib.parse.urlparse(ref)
    if parsed.scheme in ("http", "https"):
        if ref.endswith("/"):
            ref = ref + CATALOG_NAME
        try:
            body = _retrying(lambda: _http_read(ref, settings.timeout_s), ref, settings,
                             threading.Event(),
                             hint="check that the archive's web server is up and "
                                  "productfetcher.catalog is right")
        except NotFound as exc:
            raise NotFound(f"archive catalog {exc.what}",
                           "check productfetcher.catalog (or --catalog)") from exc
        catalog = Catalog.loads(body, ref)
        return catalog, lambda rel: urllib.parse.urljoin(ref, urllib.parse.quote(rel))
    path = Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else ref)
    if path.is_dir():
        path = path / CATALOG_NAME
    try:
        text = path.read_bytes()
    except FileNotFoundError as exc:
        raise NotFound(f"archive catalog {path} does not exist",
                       "check productfetcher.catalog (or --catalog)") from exc
    catalog = Catalog.loads(text, str(path))
    root = path.absolute().parent
    return catalog, lambda rel: (root / rel).as_uri()


def resolve_with_service(locator: str, service: str,
                         settings: FetchSettings) -> list[PlannedFile]:
    """The files of ``locator`` as the locator service says: ``GET <service>?locator=L``
    answers ``{"name": N, "files": [{"url", "path", "size_bytes", "sha256"}]}``; the
    files land under ``N/``, always checked against the sizes and sha256 given."""
    parse_locator(locator)
    query = urllib.parse.urlencode({"locator": locator})
    url = f"{service}{'&' if '?' in service else '?'}{query}"
    try:
        body = _retrying(lambda: _http_read(url, settings.timeout_s), url, settings,
                         threading.Event(), hint="check that the locator service is up and "
                                                 "productfetcher.locator_service is right")
    except NotFound as exc:
        raise NotFound(f"the locator service {service} does not know {locator}",
                       "check the locator") from exc

    def bad(what: str) -> Invalid:
        return Invalid(f"the locator service's answer for {locator} {what}",
                       "ask the archive's operators; the service must answer with files' "
                       "url, path, size_bytes and sha256")

    try:
        answer = json.loads(body)
    except ValueError:
        raise bad("is not JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("files"), list):
        raise bad("has no list of files")
    name = answer.get("name") or parse_locator(locator).name
    check_component(str(name), "product name")
    planned = []
    for i, item in enumerate(answer["files"]):
        if not isinstance(item, dict):
            raise bad(f"files[{i}] is not an object")
        source, rel = item.get("url"), item.get("path")
        size, digest = item.get("size_bytes"), item.get("sha256")
        if not isinstance(source, str) or urllib.parse.urlparse(source).scheme not in (
                "http", "https", "file"):
            raise bad(f"files[{i}].url is not an http(s) or file URL")
        if (not isinstance(rel, str) or not rel or rel.startswith("/")
                or ".." in rel.split("/")):
            raise bad(f"files[{i}].path {rel!r} is not a relative path without '..'")
        if (not isinstance(size, int) or isinstance(size, bool) or size < 0
                or not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise bad(f"files[{i}] needs size_bytes and a sha256 of 64 hex digits")
        planned.append(PlannedFile(locator, source, f"{name}/{rel}", size, digest))
    if not planned:
        raise bad("lists no files")
    return planned


def plan_fetch(requests: Iterable[Request], settings: FetchSettings) -> list[PlannedFile]:
    """Every file the requests stand for; raises before any transfer if one cannot be
    resolved (unknown scheme, missing local file, product not in the catalog)."""
    plan: list[PlannedFile] = []
    catalog: tuple[Catalog, Callable[[str], str]] | None = None
    for req in requests:
        locator = req.locator.strip()
        scheme = urllib.parse.urlparse(locator).scheme.lower()
        if scheme == "uid":
            if req.dest or req.size_bytes is not None or req.sha256:
                raise Invalid(f"{locator}: dest, size_bytes and sha256 are for single files",
                              "the catalog already knows the product's files")
            if catalog is None and settings.catalog:
                catalog = load_catalog(settings.catalog, settings)
            if settings.locator_service and (
                    catalog is None or catalog[0].archive != parse_locator(locator).archive):
                # another archive's locator (uid://evla/...): its locator service knows it
                plan.extend(resolve_with_service(locator, settings.locator_service, settings))
                continue
            if catalog is None:
                raise UsageError(f"{locator} needs the archive catalog, and none is set",
                                 "pass --catalog PATH|URL, or set productfetcher.catalog "
                                 "(DOCKET_PRODUCTFETCHER_CATALOG) or "
                                 "productfetcher.locator_service")
            cat, url_of = catalog
            record = cat.resolve(parse_locator(locator), settings.catalog or "")
            for f in record.files:
                plan.append(PlannedFile(locator, url_of(f"{record.path}/{f.path}"),
                                        f"{record.name}/{f.path}", f.size_bytes, f.sha256))
        elif scheme == "file":
            plan.extend(_plan_local(locator, req))
        elif scheme in ("http", "https"):
            parsed = urllib.parse.urlparse(locator)
            try:
                parsed.port  # noqa: B018 - raises on a port that is not a number
            except ValueError as exc:
                raise Invalid(f"locator {locator!r} has a bad port ({exc})",
                              "write http(s)://host[:port]/path") from exc
            if not parsed.hostname:
                raise Invalid(f"locator {locator!r} names no host",
                              "write http(s)://host[:port]/path")
            name = urllib.parse.unquote(parsed.path).rsplit("/", 1)[-1]
            if not name and not req.dest:
                raise Invalid(f"{locator} names no file", "give the URL of a file, or a dest")
            plan.append(PlannedFile(locator, locator, req.dest or name, req.size_bytes,
                                    req.sha256))
        else:
            raise Invalid(f"locator {locator!r} has no known scheme",
                          "use file:///abs/path, http(s)://host/file or uid://archive/type/name")
    return _dedupe(plan)


def _plan_local(locator: str, req: Request) -> list[PlannedFile]:
    parsed = urllib.parse.urlparse(locator)
    if parsed.netloc not in ("", "localhost"):
        raise Invalid(f"{locator} names host {parsed.netloc!r}",
                      "file:// locators are local: write file:///abs/path")
    path = Path(urllib.parse.unquote(parsed.path))
    if path.is_file():
        return [PlannedFile(locator, path.as_uri(), req.dest or path.name,
                            req.size_bytes if req.size_bytes is not None else path.stat().st_size,
                            req.sha256)]
    if path.is_dir():
        if req.size_bytes is not None or req.sha256:
            raise Invalid(f"{locator} is a directory; size_bytes and sha256 are for files",
                          "list its files one by one, or drop the checks")
        out = []
        base = req.dest or path.name
        for dirpath, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                file_path = Path(dirpath) / name
                if file_path.is_file():
                    rel = file_path.relative_to(path).as_posix()
                    out.append(PlannedFile(locator, file_path.as_uri(), f"{base}/{rel}",
                                           file_path.stat().st_size))
        if not out:
            raise NotFound(f"{locator} is an empty directory", "check the locator")
        return out
    raise NotFound(f"{locator}: {path} does not exist", "check the locator")


def _dedupe(plan: list[PlannedFile]) -> list[PlannedFile]:
    by_dest: dict[str, PlannedFile] = {}
    for item in plan:
        dest = Path(item.dest).as_posix()
        other = by_dest.get(dest)
        if other is not None:
            if other.source == item.source:
                continue
            raise Invalid(f"{other.locator} and {item.locator} both write {dest}",
                          "fetch them into different output directories")
        by_dest[dest] = item
    return list(by_dest.values())


# -- outcomes -------------------------------------------------------------------------
@dataclass
class FileOutcome:
    file: PlannedFile
    status: str  # fetched, present, failed
    size_bytes: int | None = None
    sha256: str | None = None
    attempts: int = 0
    resumed_from_bytes: int = 0
    error: DocketError | None = None

    def to_json(self) -> dict[str, Any]:
        out = self.file.to_json()
        out.update({"status": self.status, "size_bytes": self.size_bytes,
                    "sha256": self.sha256, "attempts": self.attempts,
                    "resumed_from_bytes": self.resumed_from_bytes})
        if self.error is not None:
            out["error"] = {"code": self.error.code, "message": str(self.error)}
        return out


@dataclass
class FetchReport:
    out_dir: str
    files: list[FileOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    def error(self) -> DocketError | None:
        """One error for the whole run, or None. A checksum mismatch anywhere wins (4);
        then "every failure was not found" (3); then, if something else succeeded, a
        partial failure (5); otherwise the failure itself."""
        failed = [f.error for f in self.files if f.error is not None]
        if not failed:
            return None
        first = failed[0]
        if len(failed) == 1:
            summary, hint = first.what, first.hint
        else:
            summary = f"{len(failed)} of {len(self.files)} files failed; first: {first.what}"
            hint = first.hint
        mismatches = [e for e in failed if isinstance(e, ChecksumMismatch)]
        if mismatches:
            if len(failed) == 1:
                return mismatches[0]
            return ChecksumMismatch(f"{summary} ({len(mismatches)} checksum mismatch(es))",
                                    mismatches[0].hint)
        if all(isinstance(e, NotFound) for e in failed):
            return NotFound(summary, hint)
        if len(failed) < len(self.files):
            return PartialFailure(summary, hint or "run again to fetch the rest")
        if len(failed) == 1:
            return first
        error = type(first)(summary, hint)
        return error

    def to_json(self) -> dict[str, Any]:
        return {"out_dir": self.out_dir,
                "fetched": self.count("fetched"), "present": self.count("present"),
                "failed": self.count("failed"),
                "size_bytes": sum(f.size_bytes or 0 for f in self.files
                                  if f.status != "failed"),
                "files": [f.to_json() for f in self.files]}


# -- transfers ------------------------------------------------------------------------
class _OnPosition(Protocol):
    """Where a file's transfer stands (bytes in the .part), and its size once known."""

    def __call__(self, position: int, total: int | None = None) -> None: ...


class _Transient(Exception):
    """A failure worth retrying."""


class _Cancelled(Exception):
    pass


def _transient_os() -> tuple[type[BaseException], ...]:
    """Worth another try: the network or the server hiccuped (RemoteDisconnected, a reset,
    a timeout, a garbled status line or a truncated body).

    http.client and urllib.request are imported by the code that goes over HTTP: a fetch
    from an archive on this filesystem, what most jobs do, never loads them (0.03 CPU-s
    of every productfetcher's start-up)."""
    import http.client

    return (ConnectionError, TimeoutError, http.client.HTTPException)


def _classify_http(exc: urllib.error.HTTPError, url: str) -> Exception:
    if exc.code in (404, 410):
        return NotFound(f"{url} not found (HTTP {exc.code})", "check the locator")
    if exc.code >= 500 or exc.code in (408, 429):
        return _Transient(f"HTTP {exc.code} {exc.reason}")
    return DocketError(f"{url} refused: HTTP {exc.code} {exc.reason}",
                       "check the locator and the server's access rules")


def _open(url: str, headers: dict[str, str], timeout_s: float) -> Any:
    import urllib.error  # here: see _transient_os
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, **headers})
    try:
        return urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError:
        raise
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, _transient_os()):
            raise _Transient(str(exc.reason)) from exc
        raise DocketError(f"cannot reach {url}: {exc.reason}",
                          "check the host name and the network") from exc
    except _transient_os() as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc


def _http_read(url: str, timeout_s: float) -> bytes:
    import urllib.error  # here: see _transient_os

    try:
        with _open(url, {}, timeout_s) as resp:
            length = resp.headers.get("Content-Length")
            body = resp.read()
    except urllib.error.HTTPError as exc:
        error = _classify_http(exc, url)
        raise error from exc
    except _transient_os() as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc
    if length is not None and len(body) < int(length):
        raise _Transient(f"connection closed after {len(body)} of {length} bytes")
    return body


def _retrying(action: Callable[[], Any], what: str, settings: FetchSettings,
              cancel: threading.Event, attempts: list[int] | None = None,
              hint: str = "check the network and the server, then run again "
                          "(a .part file resumes where this stopped)") -> Any:
    attempt = 0
    while True:
        attempt += 1
        if attempts is not None:
            attempts[0] = attempt
        try:
            return action()
        except _Transient as exc:
            if attempt > settings.retries:
                raise DocketError(f"fetching {what} failed after {attempt} attempts: {exc}",
                                  hint) from exc
            # Full jitter keeps N workers from hammering a recovering server in step.
            delay = settings.backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            log.info("%s: %s; retry %d of %d in %.2f s", what, exc, attempt,
                     settings.retries, delay)
            if cancel.wait(delay):
                raise _Cancelled() from exc


def _hash_prefix(part: Path) -> tuple[int, Any]:
    digest = hashlib.sha256()
    size = 0
    if part.exists():
        with open(part, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    return size, digest


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    return int(match.group(1)) if match else None


def _download(url: str, part: Path, settings: FetchSettings, cancel: threading.Event,
              on_position: _OnPosition) -> tuple[int, Any, int]:
    """One attempt: append to ``part`` from where it ends. Returns (size, digest, resumed)."""
    offset, digest = _hash_prefix(part)
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    scheme = urllib.parse.urlparse(url).scheme
    if scheme == "file":
        src = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
        try:
            fh_in = open(src, "rb")  # noqa: SIM115 - closed below in all paths
        except FileNotFoundError as exc:
            raise NotFound(f"{src} does not exist", "check the locator") from exc
        with fh_in:
            if offset > os.fstat(fh_in.fileno()).st_size:
                offset, digest = 0, hashlib.sha256()
            fh_in.seek(offset)
            return _pump(fh_in.read, part, offset, digest, None, cancel, on_position)
    from urllib.error import HTTPError  # here: see _transient_os

    try:
        resp = _open(url, headers, settings.timeout_s)
    except HTTPError as exc:
        if exc.code == 416 and offset:
            total = (exc.headers.get("Content-Range") or "").rpartition("/")[2]
            if total.isdigit() and int(total) == offset:
                return offset, digest, offset  # the .part is already whole
            part.unlink(missing_ok=True)
            raise _Transient("server refused to resume; starting again") from exc
        raise _classify_http(exc, url) from exc
    with resp:
        resumed = offset
        if offset and (resp.status != 206
                       or _content_range_start(resp.headers.get("Content-Range")) != offset):
            # The server sent the whole file (or another range): start over.
            offset, resumed, digest = 0, 0, hashlib.sha256()
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        if expected is not None:
            on_position(offset, offset + expected)  # the size, learnt for the progress bar
        try:
            # read1: whatever has arrived, so a stall keeps the bytes received before it.
            size, digest, _ = _pump(resp.read1, part, offset, digest, expected, cancel,
                                    on_position)
        except _transient_os() as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        return size, digest, resumed


def _pump(read: Callable[[int], bytes], part: Path, offset: int, digest: Any,
          expected: int | None, cancel: threading.Event,
          on_position: _OnPosition) -> tuple[int, Any, int]:
    position = offset
    on_position(position)
    with open(part, "r+b" if offset else "wb") as out:
        out.seek(offset)
        out.truncate()
        try:
            while chunk := read(_CHUNK):
                if cancel.is_set():
                    raise _Cancelled()
                out.write(chunk)
                digest.update(chunk)
                position += len(chunk)
                on_position(position)
        finally:
            out.flush()
            os.fsync(out.fileno())
    if expected is not None and position - offset < expected:
        raise _Transient(f"connection closed after {position - offset} of {expected} bytes")
    return position, digest, offset


def present(item: PlannedFile, out_dir: Path, dest: Path | None = None) -> bool:
    """True when the file is already in place with the size and sha256 the plan expects.
    Without a known sha256 nothing can be trusted, so the file is fetched again.
    ``dest``: the file's path under ``out_dir`` when the caller has joined it already."""
    dest = dest or safe_join(out_dir, item.dest)
    if item.sha256 is None or not dest.is_file():
        return False
    if item.size_bytes is not None and dest.stat().st_size != item.size_bytes:
        return False
    return sha256_file(dest) == item.sha256


def _fetch_one(item: PlannedFile, out_dir: Path, settings: FetchSettings, force: bool,
               cancel: threading.Event, on_position: _OnPosition) -> FileOutcome:
    dest = safe_join(out_dir, item.dest)
    part = dest.with_name(dest.name + ".part")
    if not force and present(item, out_dir, dest):
        on_position(item.size_bytes or dest.stat().st_size)
        return FileOutcome(item, "present", dest.stat().st_size, item.sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if force:
        part.unlink(missing_ok=True)
    attempts = [0]
    restarted = False
    while True:
        result = _retrying(lambda: _download(item.source, part, settings, cancel, on_position),
                           item.source, settings, cancel, attempts)
        size, digest, resumed = result
        sha = digest.hexdigest()
        problem = None
        if item.size_bytes is not None and size != item.size_bytes:
            problem = f"{item.dest} is {size} bytes, expected {item.size_bytes}"
        elif item.sha256 is not None and sha != item.sha256:
            problem = f"{item.dest} has sha256 {sha}, expected {item.sha256}"
        if problem is None:
            break
        part.unlink(missing_ok=True)
        if resumed and not restarted:
            # The .part may be left from an older copy of the source: one clean retry.
            log.warning("%s after resuming; fetching again from the start", problem)
            restarted = True
            continue
        raise ChecksumMismatch(f"checksum mismatch: {problem} (from {item.source})",
                               "the source is damaged or changed; nothing was kept under "
                               "that name — fix the source or the expected checksum")
    # the data is on disk (fsynced in _pump) before it takes the final name; the renames
    # are made durable by fetch(), once per directory (an MS is ~100 files in ~10)
    os.replace(part, dest)
    return FileOutcome(item, "fetched", size, sha, attempts[0], resumed)


def fetch(plan: list[PlannedFile], out_dir: Path, settings: FetchSettings, *,
          force: bool = False, progress: Progress | None = None) -> FetchReport:
    """Fetch every planned file into ``out_dir`` with ``settings.concurrency`` workers.

    Never raises for a single file's failure: each outcome carries its error and
    ``FetchReport.error()`` sums them up.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = FetchReport(str(out_dir.absolute()))
    cancel = threading.Event()
    lock = threading.Lock()
    positions: dict[str, int] = {}
    sizes = {p.dest: p.size_bytes for p in plan}

    def tracker(item: PlannedFile) -> _OnPosition:
        def on_position(position: int, total: int | None = None) -> None:
            if progress is None:
                return
            with lock:
                positions[item.dest] = position
                if total is not None and sizes[item.dest] is None:
                    sizes[item.dest] = total
                done = sum(positions.values())
                total = None if None in sizes.values() else sum(sizes.values())  # type: ignore[arg-type]
            progress(done, total, item.dest)
        return on_position

    def work(item: PlannedFile) -> FileOutcome:
        try:
            return _fetch_one(item, out_dir, settings, force, cancel, tracker(item))
        except DocketError as exc:
            log.info("%s failed: %s", item.dest, exc)
            return FileOutcome(item, "failed", error=exc)
        except _Cancelled:
            return FileOutcome(item, "failed", error=DocketError("interrupted"))
        except Exception as exc:  # noqa: BLE001 - one bad file must not sink the others
            log.debug("%s failed", item.dest, exc_info=True)
            return FileOutcome(item, "failed", error=DocketError(
                f"fetching {item.source} into {item.dest} failed: {exc}",
                f"check the source, and space and permissions in {out_dir}"))

    pool = ThreadPoolExecutor(max_workers=max(1, min(settings.concurrency, len(plan) or 1)),
                              thread_name_prefix="fetch")
    try:
        report.files = list(pool.map(work, plan))
    except BaseException:
        # Ctrl-C: let workers stop at their next chunk; their .part files stay to resume.
        cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    _sync_directories(out_dir, [f for f in report.files if f.status == "fetched"])
    return report


def _sync_directories(out_dir: Path, fetched: list[FileOutcome]) -> None:
    """fsync each directory that received a file, and every directory above it up to
    ``out_dir`` (new ones hold the entries of those below), deepest first: the renames
    are durable before productfetcher exits and its job is counted done. A directory
    that cannot be synced fails the files renamed into it, as their own fsync would."""
    root = out_dir.absolute()
    arrived: dict[Path, list[FileOutcome]] = {root: []}
    for outcome in fetched:
        parts = Path(outcome.file.dest).parent.parts  # checked by safe_join: no '..'
        for depth in range(1, len(parts) + 1):
            arrived.setdefault(root.joinpath(*parts[:depth]), [])
        arrived[root.joinpath(*parts)].append(outcome)
    for directory in sorted(arrived, key=lambda d: len(d.parts), reverse=True):
        try:
            fsync_dir(directory)
        except OSError as exc:
            if directory == root:
                continue  # as before: the output directory itself is best effort
            for outcome in arrived[directory]:
                outcome.status, outcome.error = "failed", DocketError(
                    f"fetching {outcome.file.source} into {outcome.file.dest} failed: "
                    f"the new name could not be made durable ({exc})",
                    f"check the disk under {out_dir}")
