"""``deliver``: hand a run's products (or raw data) to the requester.

The result is built under a temporary dot-name beside its final place, with every file's
permissions set and a ``SHA256SUMS`` written, and only then renamed into place, so a
requester never sees half a delivery. With ``tar`` the delivery folder holds one
uncompressed archive (measurement sets and images barely compress) and the archive's
``SHA256SUMS``; the archive carries its own ``SHA256SUMS`` of the files inside.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from docket.errors import DocketError, Invalid, NotFound, UsageError
from docket.fileio import fsync_dir, safe_join
from docket.procdir import PRODUCTS, RAWDATA, ProcessingDirectory

__all__ = [
    "AlreadyDelivered",
    "DeliverySettings",
    "Delivery",
    "SUMS_NAME",
    "parse_mode",
    "resolve_settings",
    "select_source",
    "deliver",
]

log = logging.getLogger("docket.tools.deliver")

SUMS_NAME = "SHA256SUMS"
_CHUNK = 1 << 20

Progress = Callable[[str], None]


class AlreadyDelivered(DocketError):
    code = "already-delivered"


@dataclass(frozen=True)
class DeliverySettings:
    """Where a delivery goes and how it is made readable, resolved from flags and config."""

    dest_root: Path
    url_base: str | None = None
    file_mode: int = 0o644
    dir_mode: int = 0o755


@dataclass
class Delivery:
    """What ``deliver`` made; ``as_dict`` is the ``--json`` record."""

    source: Path
    destination: Path
    url: str | None
    files: int
    size_bytes: int
    archive: Path | None
    sums: Path
    replaced: bool = False
    entries: list[str] = field(default_factory=list)
    unchanged: bool = False  # --force over an identical delivery: nothing was rewritten

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "destination": str(self.destination),
            "url": self.url,
            "files": self.files,
            "size_bytes": self.size_bytes,
            "archive": str(self.archive) if self.archive else None,
            "sha256sums": str(self.sums),
            "replaced": self.replaced,
            "unchanged": self.unchanged,
        }


def parse_mode(value: Any, key: str) -> int:
    """A permission mode from config: an octal string (``"0644"``) or a YAML octal int."""
    if isinstance(value, bool):
        raise Invalid(f"deliver.{key} {value!r} is not a permission mode",
                      'write it as an octal string, e.g. "0644"')
    if isinstance(value, int):
        mode = value
    else:
        text = str(value).strip().lower().removeprefix("0o")
        if not text or any(c not in "01234567" for c in text):
            raise Invalid(f"deliver.{key} {value!r} is not an octal permission mode",
                          'write it as an octal string, e.g. "0644"')
        mode = int(text, 8)
    # An unquoted 644 in YAML is the decimal number 644, which has bits above 0o777.
    if not 0 <= mode <= 0o777:
        raise Invalid(f"deliver.{key} {value!r} is not a permission mode",
                      'quote it as an octal string, e.g. "0644"')
    return mode


def resolve_settings(config: dict[str, Any], *, local_dest: Path | None,
                     web: bool, image_cache: bool = False) -> DeliverySettings:
    """Flags first (``-l``, ``--web``, ``--image-cache``), then the ``deliver`` section of
    the tools config."""
    if sum((local_dest is not None, web, image_cache)) > 1:
        raise UsageError("-l/--local, --web and --image-cache exclude each other",
                         "give one of them")
    file_mode = parse_mode(config.get("file_mode", "0644"), "file_mode")
    dir_mode = parse_mode(config.get("dir_mode", "0755"), "dir_mode")
    if image_cache:
        root = config.get("image_cache_root")
        if not root:
            raise Invalid("--image-cache needs deliver.image_cache_root",
                          "set it in tools.yaml (or DOCKET_DELIVER_IMAGE_CACHE_ROOT)")
        return DeliverySettings(Path(str(root)), None, file_mode, dir_mode)
    if web:
        root, url = config.get("web_root"), config.get("web_url")
        if not root or not url:
            raise Invalid("web delivery needs deliver.web_root and deliver.web_url",
                          "set both in tools.yaml (or DOCKET_DELIVER_WEB_ROOT/_WEB_URL)")
        return DeliverySettings(Path(str(root)), str(url), file_mode, dir_mode)
    if local_dest is None:
        root = config.get("local_root")
        if not root:
            raise UsageError("no delivery destination",
                             "give -l LOCAL_DEST or --web, or set deliver.local_root")
        local_dest = Path(str(root))
    return DeliverySettings(local_dest, None, file_mode, dir_mode)


def select_source(source_dir: Path, rawdata: bool) -> Path:
    """The folder whose contents are delivered: products/ (or rawdata/), else the folder.

    A processing directory without the asked-for subfolder is an error rather than a
    reason to deliver its working files.
    """
    if not source_dir.is_dir():
        raise NotFound(f"source directory {source_dir} does not exist",
                       "give the processing directory or a folder of products")
    part = RAWDATA if rawdata else PRODUCTS
    chosen = source_dir / part
    if chosen.is_dir():  # follows a conveyor link into the QA area, on purpose
        return chosen
    if ProcessingDirectory(source_dir).has_parts():
        raise NotFound(f"{chosen} does not exist",
                       "is the run still in the QA area? run conveyor --retrieve first"
                       if chosen.is_symlink() else
                       f"deliver a processing directory that has {part}/")
    return source_dir


def _walk(top: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, real path) of every file under ``top``, sorted, links followed.

    A link is followed only when it resolves inside ``top``: a delivery must not carry
    files from elsewhere on the node. Directory loops are cut.
    """
    real_top = top.resolve()
    seen: set[Path] = set()

    def visit(directory: Path, rel: str) -> Iterator[tuple[str, Path]]:
        real = directory.resolve()
        if real in seen:
            raise Invalid(f"symlink loop at {directory}", "remove the looping link")
        seen.add(real)
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            path = Path(entry.path)
            rel_path = f"{rel}{entry.name}"
            if entry.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(real_top):
                    raise Invalid(f"{path} is a symlink to {target}, outside {top}",
                                  "copy the file in or remove the link")
                if not target.exists():
                    raise Invalid(f"{path} is a dangling symlink",
                                  "remove it or restore its target")
            if path.is_dir():
                yield from visit(path, rel_path + "/")
            elif path.is_file():
                yield rel_path, path
            else:
                raise Invalid(f"{path} is not a regular file", "remove it before delivery")
        seen.discard(real)

    yield from visit(top, "")


def _copy_hashing(src: Path, dst: Path, file_mode: int) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(src, "rb") as inp, open(dst, "xb") as out:
        while chunk := inp.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
        os.fchmod(out.fileno(), file_mode)
    shutil.copystat(src, dst)  # keeps mtimes; permissions are set again below
    os.chmod(dst, file_mode)
    return digest.hexdigest(), size


class _HashingReader:
    """A read-only file wrapper that hashes what tarfile reads through it."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self.digest.update(data)
        return data


def _sums_text(sums: list[tuple[str, str]]) -> bytes:
    # The format of sha256sum(1), so `sha256sum -c SHA256SUMS` checks a delivery.
    return "".join(f"{digest}  {rel}\n" for rel, digest in sums).encode()


def _write_file(path: Path, data: bytes, mode: int) -> None:
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, mode)


def _build_tree(files: list[tuple[str, Path]], tmp: Path, settings: DeliverySettings,
                progress: Progress | None) -> tuple[int, list[tuple[str, str]]]:
    sums: list[tuple[str, str]] = []
    total = 0
    made: set[Path] = {tmp}
    for index, (rel, src) in enumerate(files, 1):
        dst = tmp / rel
        for parent in reversed(dst.relative_to(tmp).parents[:-1]):
            folder = tmp / parent
            if folder not in made:
                folder.mkdir()
                os.chmod(folder, settings.dir_mode)
                made.add(folder)
        digest, size = _copy_hashing(src, dst, settings.file_mode)
        sums.append((rel, digest))
        total += size
        if progress:
            progress(f"[{index}/{len(files)}] {rel}")
    for folder in sorted(made, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(folder)
    return total, sums


def _build_archive(files: list[tuple[str, Path]], tmp: Path, name: str,
                   settings: DeliverySettings,
                   progress: Progress | None) -> tuple[int, Path, list[tuple[str, str]]]:
    archive = tmp / f"{name}.tar"
    sums: list[tuple[str, str]] = []
    total = 0
    dirs_added: set[str] = set()
    with open(archive, "xb") as raw, tarfile.open(fileobj=raw, mode="w",
                                                  format=tarfile.PAX_FORMAT) as tar:
        for index, (rel, src) in enumerate(files, 1):
            parts = rel.split("/")[:-1]
            for depth in range(len(parts) + 1):
                folder = "/".join([name, *parts[:depth]])
                if folder not in dirs_added:
                    info = tarfile.TarInfo(folder)
                    info.type = tarfile.DIRTYPE
                    info.mode = settings.dir_mode
                    info.mtime = int(src.stat().st_mtime)
                    tar.addfile(info)
                    dirs_added.add(folder)
            st = src.stat()
            info = tarfile.TarInfo(f"{name}/{rel}")
            info.size = st.st_size
            info.mtime = int(st.st_mtime)
            info.mode = settings.file_mode
            with open(src, "rb") as fh:
                reader = _HashingReader(fh)
                tar.addfile(info, reader)  # type: ignore[arg-type]
            sums.append((rel, reader.digest.hexdigest()))
            total += st.st_size
            if progress:
                progress(f"[{index}/{len(files)}] {rel}")
        inner = _sums_text(sums)
        info = tarfile.TarInfo(f"{name}/{SUMS_NAME}")
        info.size = len(inner)
        info.mode = settings.file_mode
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(inner))
        raw.flush()
        os.fsync(raw.fileno())
    os.chmod(archive, settings.file_mode)
    digest = hashlib.sha256()
    with open(archive, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return total, archive, [(archive.name, digest.hexdigest())]


def deliver(source_dir: Path, settings: DeliverySettings, *, prefix: str | None = None,
            tar: bool = False, rawdata: bool = False, force: bool = False,
            progress: Progress | None = None, name: str | None = None) -> Delivery:
    """Deliver ``source_dir`` to ``settings.dest_root[/prefix]/<name>`` (``name``: the
    name of ``source_dir`` unless given)."""
    source_dir = source_dir.absolute()
    settings = replace(settings, dest_root=settings.dest_root.absolute())
    top = select_source(source_dir, rawdata)
    if name is not None and (not name or "/" in name or name in (".", "..")
                             or name.startswith(".")):
        raise Invalid(f"delivery name {name!r} must be a plain folder name",
                      "give --name without '/' and not starting with '.'")
    name = name or source_dir.name
    if not settings.dest_root.is_dir():
        raise NotFound(f"delivery area {settings.dest_root} does not exist",
                       "create it or give another destination")
    parent = settings.dest_root
    rel_parts: list[str] = []
    if prefix:
        parent = safe_join(settings.dest_root, prefix)
        rel_parts.extend(Path(prefix).parts)
    rel_parts.append(name)
    final = parent / name
    if (final.exists() or final.is_symlink()) and not force:
        raise AlreadyDelivered(f"{final} already exists",
                               "give --force to replace it, or another --prefix")
    files = [(rel, path) for rel, path in _walk(top) if rel != SUMS_NAME]
    if not files:
        raise NotFound(f"{top} holds no files", "nothing to deliver")
    if not parent.exists():
        # Made one level at a time so that each new folder gets dir_mode despite umask.
        for ancestor in reversed([parent, *parent.parents]):
            if not ancestor.exists():
                ancestor.mkdir()
                os.chmod(ancestor, settings.dir_mode)
    tmp = parent / f".{name}.deliver-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        os.chmod(tmp, settings.dir_mode)
        if tar:
            total, archive, sums = _build_archive(files, tmp, name, settings, progress)
        else:
            total, sums = _build_tree(files, tmp, settings, progress)
            archive = None
        _write_file(tmp / SUMS_NAME, _sums_text(sums), settings.file_mode)
        fsync_dir(tmp)
        replaced = unchanged = False
        if (final / SUMS_NAME).is_file() and not final.is_symlink() and (
                (final / SUMS_NAME).read_bytes() == (tmp / SUMS_NAME).read_bytes()):
            # the same files with the same checksums are there already: keep them
            shutil.rmtree(tmp)
            unchanged = True
        elif final.exists() or final.is_symlink():
            # Move the old delivery aside first: a crash leaves the old or the new one in
            # place, plus a dot-named leftover for the annihilator.
            old = parent / f".{name}.replaced-{uuid.uuid4().hex[:12]}"
            os.rename(final, old)
            os.rename(tmp, final)
            replaced = True
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        else:
            os.rename(tmp, final)
        fsync_dir(parent)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    url = None
    if settings.url_base is not None:
        url = settings.url_base.rstrip("/") + "/" + "/".join(quote(p) for p in rel_parts) + "/"
    log.info("delivered %s to %s", top, final)
    return Delivery(source=top, destination=final, url=url, files=len(files),
                    size_bytes=total,
                    archive=final / archive.name if archive is not None else None,
                    sums=final / SUMS_NAME, replaced=replaced,
                    entries=[rel for rel, _ in files], unchanged=unchanged)
