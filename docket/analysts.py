"""Who may decide what: the home's ``analysts.yaml``, and the identity of a file's author.

The actor of a spool document is the owner of the file (``user_of_file``), never a name
written inside it. ``analysts.yaml`` gives each user roles (``da``, ``aod``,
``operator``, ...); a state machine transition marked with a role needs an actor who has
it. A missing file lists nobody: every human decision that needs a role is refused.

Edits (``add``, ``remove``) are serialized by ``flock`` on ``analysts.yaml.lock`` and
written atomically, so two DAs editing at once both get their change and a reader sees
the old list or the new one. The file is rewritten from the model: comments are not kept.

Once the list names an operator, only an operator (or root) may change it, and the last
operator cannot be removed, so the list cannot be locked or opened by accident. The real
protection of the file is its permissions; these checks keep honest users honest.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docket.errors import DocketError, ExitCode, Invalid, NotFound
from docket.fileio import atomic_write, is_disk_error
from docket.locks import held

__all__ = [
    "ANALYSTS_FILE",
    "OPERATOR",
    "Analysts",
    "AnalystChange",
    "NotAuthorized",
    "analysts_path",
    "load_analysts",
    "add",
    "remove",
    "user_of_file",
    "user_of_uid",
    "groups_of",
    "may_submit",
]

log = logging.getLogger("docket.analysts")

ANALYSTS_FILE = "analysts.yaml"
OPERATOR = "operator"
_ROOT = "root"
_HEADER = ("# docket analysts: user -> roles (docs/gitops.md). Written by 'docket analysts';\n"
           "# comments are not kept.\n")
_LOCK_TIMEOUT_S = 30.0


class NotAuthorized(DocketError):
    exit_code = ExitCode.FAILURE
    code = "not-authorized"


# identity ---------------------------------------------------------------------------


def user_of_uid(uid: int) -> str:
    """The user name of ``uid``, or the uid as a number when it has no name."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def user_of_file(path: Path | str) -> str:
    """The owner of ``path`` (the file itself, not a symlink's target) as a user name."""
    return user_of_uid(os.lstat(path).st_uid)


def groups_of(user: str) -> set[str]:
    """Names of every group ``user`` belongs to (primary and supplementary).

    A name this machine does not know (a bare uid, a git author) belongs to no group.
    """
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return set()
    names = set()
    for gid in os.getgrouplist(entry.pw_name, entry.pw_gid):
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.add(str(gid))
    return names


def may_submit(user: str, submitters: Sequence[str] | None) -> bool:
    """Whether ``user`` may submit to a capability that lists ``submitters``.

    ``None`` (the capability says nothing) lets anyone submit; an empty list lets nobody.
    Entries are user names, or ``@group`` for every member of a group.
    """
    if submitters is None:
        return True
    if user in submitters:
        return True
    wanted = {s[1:] for s in submitters if s.startswith("@")}
    return bool(wanted) and not wanted.isdisjoint(groups_of(user))


# the list ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Analysts:
    """The analysts of a home, as read from ``analysts.yaml`` (empty when it is missing)."""

    path: Path
    entries: Mapping[str, Any] = field(default_factory=dict)  # user -> schemas Analyst

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, user: object) -> bool:
        return user in self.entries

    def users(self) -> list[str]:
        return sorted(self.entries)

    def roles_of(self, user: str | None) -> set[str]:
        """The roles of ``user``; an unlisted user (or None) has none."""
        entry = self.entries.get(user) if user is not None else None
        return set(entry.roles) if entry is not None else set()

    def has_role(self, user: str | None, role: str) -> bool:
        return role in self.roles_of(user)

    def with_role(self, role: str) -> list[str]:
        return sorted(u for u, e in self.entries.items() if role in e.roles)

    def user_for_email(self, email: str | None) -> str | None:
        """The user whose ``emails`` list a git author email, or None."""
        if not email:
            return None
        wanted = email.strip().lower()
        for user, entry in self.entries.items():
            if any(e.lower() == wanted for e in entry.emails):
                return user
        return None

    def actor_for_author(self, name: str | None, email: str | None) -> str:
        """The actor of a git commit: the user listing ``email``, else ``Name <email>``.

        An author no entry lists is recorded as git shows them and has no role.
        """
        user = self.user_for_email(email)
        if user is not None:
            return user
        if not name and not email:
            return "unknown author"  # e.g. beyond the edge of a shallow clone
        return f"{name or 'unknown'} <{email or ''}>"

    def as_dict(self) -> dict[str, Any]:
        return {"file": str(self.path), "analysts": [
            {"user": u, "roles": sorted(self.entries[u].roles),
             "emails": list(self.entries[u].emails), "name": self.entries[u].name}
            for u in self.users()]}


def analysts_path(home_root: Path | str) -> Path:
    return Path(home_root) / ANALYSTS_FILE


# Parsed lists by path, valid while the file keeps its identity (an edit renames a new
# file into place, so the inode changes): intake asks once per document.
_cache: dict[Path, tuple[tuple[int, int, int, int], Analysts]] = {}


def load_analysts(home_root: Path | str) -> Analysts:
    """Read ``<home>/analysts.yaml``; a missing file lists nobody.

    Raises ``Invalid`` naming the line and field of what is wrong.
    """
    path = analysts_path(home_root)
    try:
        st = path.stat()
    except FileNotFoundError:
        return Analysts(path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    cached = _cache.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    analysts = _read(path)
    _cache[path] = (key, analysts)
    return analysts


def _read(path: Path) -> Analysts:
    from pydantic import ValidationError

    from docket.documents import DocumentError, load_yaml
    from schemas.analysts import AnalystsFile

    hint = "fix it, or change it with 'docket analysts add|remove'"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Analysts(path)
    except OSError as exc:
        if is_disk_error(exc):
            raise  # an I/O error says nothing about who may decide: retried next pass
        raise Invalid(f"cannot read {path}: {exc.strerror}", "check its permissions") from None
    if not any(line.strip() and not line.lstrip().startswith(b"#")
               for line in raw.splitlines()):
        return Analysts(path)  # empty, or comments only: nobody
    try:
        data, marks = load_yaml(raw, what="file")
    except DocumentError as exc:
        raise Invalid(f"{path}: {exc}", hint) from None
    try:
        model = AnalystsFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        is_key = "[key]" in loc
        if is_key:  # pydantic marks a bad mapping key this way; the key is the user name
            loc = loc[:loc.index("[key]")]
        where = ".".join(str(p) for p in loc) or "top level"
        line = None
        # marks hold the line of a key's value, not of the key: name the key, not a line
        for n in range(len(loc), -1 if not is_key else len(loc), -1):
            if loc[:n] in marks:
                line = marks[loc[:n]][0]
                break
        message = err["msg"]
        if err["type"] == "string_pattern_mismatch":
            message = f"{err.get('input')!r} is not a valid " + (
                "role (lower-case letters, digits, '_', '-')" if "roles" in loc else
                "user name" if is_key else "value")
        elif err["type"] == "extra_forbidden":
            message = "unknown field (check the spelling)"
        prefix = f"{path}: " + (f"line {line} " if line else "") + f"({where})"
        raise Invalid(f"{prefix}: {message}", hint) from None
    return Analysts(path, dict(model.analysts))


# edits ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnalystChange:
    """What one ``add`` or ``remove`` did, for the caller to print or record as an event."""

    action: str  # add, remove
    user: str
    actor: str
    roles_before: list[str]
    roles_after: list[str]
    emails_after: list[str]
    file: str
    changed: bool  # False when the list already said so and was left as it was

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "user": self.user, "actor": self.actor,
                "roles_before": self.roles_before, "roles_after": self.roles_after,
                "emails": self.emails_after, "file": self.file, "changed": self.changed}


@contextlib.contextmanager
def _edit_lock(path: Path, timeout_s: float = _LOCK_TIMEOUT_S) -> Iterator[None]:
    with held(path.with_name(path.name + ".lock"), timeout_s, mode=0o664,
              busy=f"{path} is being edited by another process",
              fix="try again in a moment"):
        yield


def _check_editor(current: Analysts, actor: str) -> None:
    operators = current.with_role(OPERATOR)
    if operators and actor != _ROOT and actor not in operators:
        raise NotAuthorized(
            f"{actor} may not change {current.path}: only an operator may "
            f"({', '.join(operators)})", "ask an operator to make the change")


def _write(path: Path, entries: Mapping[str, Any]) -> None:
    import yaml

    body: dict[str, Any] = {}
    for user in sorted(entries):
        entry = entries[user].model_dump(exclude_defaults=True)
        entry["roles"] = sorted(set(entry["roles"]))
        body[user] = {k: entry[k] for k in ("roles", "emails", "name") if k in entry}
    text = _HEADER + yaml.safe_dump({"analysts": body}, sort_keys=False,
                                    default_flow_style=None, allow_unicode=True)
    try:
        st: os.stat_result | None = path.stat()
    except FileNotFoundError:
        st = None
    try:
        atomic_write(path, text, mode=(st.st_mode & 0o777) if st else 0o644)
    except PermissionError:
        raise DocketError(f"cannot write {path}: permission denied",
                          f"ask the owner of {path.parent} for write access") from None
    if st is not None:
        # the new file belongs to whoever ran the edit; keep the group that shares it
        with contextlib.suppress(OSError):
            os.chown(path, -1, st.st_gid)


def _analyst(user: str, roles: Iterable[str], emails: Iterable[str], name: str | None) -> Any:
    from pydantic import ValidationError

    from schemas.analysts import ROLE_PATTERN, USER_PATTERN, Analyst, AnalystsFile

    try:
        entry = Analyst(roles=sorted(set(roles)), emails=list(dict.fromkeys(emails)),
                        name=name)
        AnalystsFile(analysts={user: entry})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        if "roles" in loc and err["type"] == "too_short":
            raise Invalid(f"no role given for {user}", "add at least one --role") from None
        if "roles" in loc:
            raise Invalid(f"{err.get('input')!r} is not a valid role",
                          f"use lower-case letters, digits, '_' and '-' ({ROLE_PATTERN})"
                          ) from None
        if "emails" in loc:
            raise Invalid(f"{err.get('input')!r} is not an email address",
                          "give the address git records as the author email") from None
        if "analysts" in loc:
            raise Invalid(f"{user!r} is not a valid user name",
                          f"give a login name ({USER_PATTERN})") from None
        raise Invalid(f"{'.'.join(loc)}: {err['msg']}") from None
    return entry


def add(home_root: Path | str, user: str, roles: Iterable[str], actor: str, *,
        emails: Iterable[str] = (), name: str | None = None) -> AnalystChange:
    """Give ``user`` the ``roles`` (and git author ``emails``), keeping what they had."""
    from pydantic import ValidationError

    from schemas.analysts import AnalystsFile

    path = analysts_path(home_root)
    new = _analyst(user, roles, emails, name)
    with _edit_lock(path):
        current = _read(path)
        _check_editor(current, actor)
        old = current.entries.get(user)
        before = sorted(old.roles) if old else []
        merged = _analyst(user, [*before, *new.roles],
                          [*(old.emails if old else []), *new.emails],
                          name if name is not None else (old.name if old else None))
        entries = dict(current.entries)
        entries[user] = merged
        try:
            AnalystsFile(analysts=entries)
        except ValidationError as exc:
            raise Invalid(str(exc.errors()[0]["msg"]).removeprefix("Value error, "),
                          "an email maps to one user; remove it from the other first"
                          ) from None
        if merged != old:
            _write(path, entries)
            log.info("%s gave %s the roles %s", actor, user, ", ".join(merged.roles))
    return AnalystChange("add", user, actor, before, sorted(merged.roles),
                         list(merged.emails), str(path), merged != old)


def remove(home_root: Path | str, user: str, actor: str, *,
           roles: Iterable[str] | None = None) -> AnalystChange:
    """Take ``roles`` away from ``user``, or remove the user from the list (``roles=None``)."""
    path = analysts_path(home_root)
    drop = None if roles is None else set(roles)
    with _edit_lock(path):
        current = _read(path)
        _check_editor(current, actor)
        old = current.entries.get(user)
        if old is None:
            raise NotFound(f"{user} is not listed in {path}",
                           "see 'docket analysts list'")
        before = sorted(old.roles)
        if drop is not None and not drop <= set(before):
            missing = ", ".join(sorted(drop - set(before)))
            raise NotFound(f"{user} does not have the role {missing} (has: "
                           f"{', '.join(before)})", "see 'docket analysts list'")
        after = [] if drop is None else [r for r in before if r not in drop]
        entries = dict(current.entries)
        if after:
            entries[user] = old.model_copy(update={"roles": after})
        else:
            del entries[user]
        if OPERATOR in before and OPERATOR not in after and current.with_role(OPERATOR) == [
                user]:
            raise NotAuthorized(
                f"{user} is the last operator in {path}; without one anyone could change "
                "the list", "add another operator first")
        _write(path, entries)
        log.info("%s removed %s from %s", actor, ", ".join(drop) if drop else "all roles",
                 user)
    return AnalystChange("remove", user, actor, before, after,
                         list(old.emails) if after else [], str(path), True)
