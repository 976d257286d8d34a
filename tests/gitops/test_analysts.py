"""analysts.yaml, `docket analysts`, and who owns a file: real files, real users.

Users and groups are created with useradd/groupadd (the tests run as root) and deleted
afterwards; where that is impossible the tests that need them are skipped, saying why.
A command "run by" a test user is the CLI called in a forked child that has setuid to
that user (the venv lives under /root, which other users cannot execute from).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import multiprocessing
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from cli.analysts import app
from cli.common import run
from docket import analysts as lib
from docket.errors import Invalid, Locked, NotFound


@dataclass
class Result:
    code: int
    out: str
    err: str


def cli(*args: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(app, [str(a) for a in args], prog="docket analysts")
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture
def home(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    root.mkdir()
    return root


# real users -------------------------------------------------------------------------


@dataclass
class Account:
    name: str
    uid: int
    gid: int
    group: str  # primary group
    extra_group: str  # a supplementary group


def _can_manage_users() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create test users"
    for tool in ("useradd", "userdel", "groupadd", "groupdel"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@pytest.fixture
def test_user() -> Iterator[Account]:
    reason = _can_manage_users()
    if reason:
        pytest.skip(f"no test user: {reason}")
    tag = uuid.uuid4().hex[:8]
    name, group, extra = f"dkt{tag}", f"dktg{tag}", f"dktx{tag}"
    created: list[list[str]] = []
    try:
        for cmd, undo in ((["groupadd", group], ["groupdel", group]),
                          (["groupadd", extra], ["groupdel", extra]),
                          (["useradd", "-M", "-N", "-g", group, "-G", extra, "-s",
                            "/usr/sbin/nologin", name], ["userdel", name])):
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"no test user: {' '.join(cmd)} failed: {done.stderr.strip()}")
            created.append(undo)
        entry = pwd.getpwnam(name)
        yield Account(name, entry.pw_uid, entry.pw_gid, group, extra)
    finally:
        for undo in reversed(created):
            subprocess.run(undo, capture_output=True)


@pytest.fixture
def shared_home() -> Iterator[Path]:
    """A home that a test user can write (tmp_path's parents are private to root)."""
    root = Path(tempfile.mkdtemp(prefix="docket-analysts-", dir="/tmp"))
    os.chmod(root, 0o777)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def as_user(user: Account, fn: Callable[[], Result]) -> Result:
    """Run ``fn`` in a forked child whose real and effective ids are ``user``'s."""
    # the child cannot read the venv (under /root): import what the commands need now
    import docket.documents  # noqa: F401
    import docket.home  # noqa: F401
    import schemas.analysts  # noqa: F401

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read)
            os.setgroups(os.getgrouplist(user.name, user.gid))
            os.setgid(user.gid)
            os.setuid(user.uid)
            result = fn()
            os.write(write, json.dumps(result.__dict__).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return Result(**json.loads(data))


# reading the list -------------------------------------------------------------------


def test_a_missing_file_lists_nobody(home: Path) -> None:
    analysts = lib.load_analysts(home)
    assert len(analysts) == 0
    assert analysts.roles_of("alice") == set()
    assert not analysts.has_role("alice", "da")
    assert analysts.roles_of(None) == set()
    result = cli("list", "--home", home)
    assert result.code == 0
    assert result.out == (f"no analysts listed in {home}/analysts.yaml; add one with "
                          "'docket analysts add USER --role ROLE'\n")


def test_a_hand_written_file_is_read(home: Path) -> None:
    (home / "analysts.yaml").write_text(
        "# DAs of the VLASS team\n"
        "analysts:\n"
        "  alice:\n"
        "    roles: [da, aod]\n"
        "    emails: [Alice@Example.org]\n"
        "  bob:\n"
        "    roles:\n"
        "      - operator\n"
        "    name: Bob Builder\n")
    analysts = lib.load_analysts(home)
    assert analysts.users() == ["alice", "bob"]
    assert analysts.roles_of("alice") == {"da", "aod"}
    assert analysts.has_role("bob", "operator")
    assert not analysts.has_role("alice", "operator")
    assert analysts.with_role("da") == ["alice"]
    assert analysts.user_for_email("alice@example.org") == "alice"
    assert analysts.user_for_email("mallory@example.org") is None
    assert analysts.actor_for_author("Alice A", "ALICE@example.org") == "alice"
    assert analysts.actor_for_author("Mallory", "mallory@example.org") == (
        "Mallory <mallory@example.org>")
    assert analysts.roles_of("Mallory <mallory@example.org>") == set()
    assert analysts.actor_for_author(None, None) == "unknown author"
    result = cli("list", "--home", home)
    assert result.out.splitlines() == [
        "USER   ROLES     EMAILS             NAME",
        "alice  aod, da   Alice@Example.org",
        "bob    operator                     Bob Builder",
    ]


def test_comments_only_lists_nobody(home: Path) -> None:
    (home / "analysts.yaml").write_text("# nobody yet\n\n")
    assert len(lib.load_analysts(home)) == 0


@pytest.mark.parametrize(("text", "expected"), [
    ("analysts:\n  alice:\n    roles: [da]\n  alice:\n    roles: [aod]\n",
     "duplicate key"),
    ("analysts:\n  alice:\n    roles: [DA]\n",
     "line 3 (analysts.alice.roles.0): 'DA' is not a valid role"),
    ("analysts:\n  alice:\n    roles: [da]\n    role: [aod]\n",
     "line 4 (analysts.alice.role): unknown field (check the spelling)"),
    ("analysts:\n  alice:\n    roles: []\n",
     "(analysts.alice.roles): List should have at least 1 item"),
    ("analysts:\n  al ice:\n    roles: [da]\n",
     "analysts.yaml: (analysts.al ice): 'al ice' is not a valid user name"),
    ("analysts:\n  a:\n    roles: [da]\n    emails: [x@y.org]\n"
     "  b:\n    roles: [da]\n    emails: [X@Y.org]\n",
     "email 'X@Y.org' is listed for both 'a' and 'b'"),
    ("- alice\n", "(top level): Input should be a valid dictionary"),
])
def test_a_broken_file_is_refused_with_its_line(home: Path, text: str, expected: str) -> None:
    (home / "analysts.yaml").write_text(text)
    with pytest.raises(Invalid) as caught:
        lib.load_analysts(home)
    assert expected in str(caught.value)
    assert str(caught.value).startswith(f"{home}/analysts.yaml: ")
    result = cli("list", "--home", home)
    assert result.code == 8
    assert result.err.startswith(f"Error: {home}/analysts.yaml: ")
    assert result.err.rstrip().endswith(
        "— fix it, or change it with 'docket analysts add|remove'")


def test_an_edit_is_seen_by_the_next_load(home: Path) -> None:
    lib.add(home, "alice", ["da"], "root")
    assert lib.load_analysts(home).roles_of("alice") == {"da"}
    lib.add(home, "alice", ["aod"], "root")
    assert lib.load_analysts(home).roles_of("alice") == {"da", "aod"}


# editing it -------------------------------------------------------------------------


def test_add_list_remove_through_the_cli(home: Path) -> None:
    r = cli("add", "alice", "--role", "da", "--role", "aod", "--email", "alice@example.org",
            "--home", home)
    assert (r.code, r.out, r.err) == (0, "alice: no role → aod, da\n", "")
    r = cli("add", "alice", "-r", "da", "--home", home)
    assert r.out == "alice: unchanged (aod, da)\n"
    r = cli("add", "bob", "-r", "operator", "--name", "Bob Builder", "--home", home)
    assert r.out == "bob: no role → operator\n"
    assert yaml.safe_load((home / "analysts.yaml").read_text()) == {"analysts": {
        "alice": {"roles": ["aod", "da"], "emails": ["alice@example.org"]},
        "bob": {"roles": ["operator"], "name": "Bob Builder"}}}
    assert (home / "analysts.yaml").read_text().startswith("# docket analysts:")

    r = cli("list", "--json", "--home", home)
    assert json.loads(r.out) == {
        "docket": 1, "ok": True, "file": f"{home}/analysts.yaml",
        "analysts": [
            {"user": "alice", "roles": ["aod", "da"], "emails": ["alice@example.org"],
             "name": None},
            {"user": "bob", "roles": ["operator"], "emails": [], "name": "Bob Builder"}]}

    r = cli("remove", "alice", "--role", "aod", "--json", "--home", home)
    assert json.loads(r.out) == {
        "docket": 1, "ok": True, "action": "remove", "user": "alice", "actor": "root",
        "roles_before": ["aod", "da"], "roles_after": ["da"],
        "emails": ["alice@example.org"], "file": f"{home}/analysts.yaml", "changed": True}
    r = cli("remove", "alice", "--home", home)
    assert r.out == "alice: removed (had da)\n"
    assert lib.load_analysts(home).users() == ["bob"]


def test_the_home_comes_from_docket_home(home: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKET_HOME", str(home))
    assert cli("add", "alice", "-r", "da").code == 0
    assert lib.load_analysts(home).roles_of("alice") == {"da"}


@pytest.mark.parametrize(("args", "code", "error"), [
    (["add", "alice"], 2, "Missing option '--role'"),
    (["add", "alice", "-r", "Data Analyst"], 8,
     "Error: 'Data Analyst' is not a valid role — use lower-case letters, digits, '_' and '-'"),
    (["add", "../alice", "-r", "da"], 8, "Error: '../alice' is not a valid user name"),
    (["add", "alice", "-r", "da", "--email", "alice"], 8,
     "Error: 'alice' is not an email address — give the address git records as the author "
     "email"),
    (["remove", "carol"], 3, "Error: carol is not listed in"),
])
def test_bad_edits_are_refused(home: Path, args: list[str], code: int, error: str) -> None:
    r = cli(*args, "--home", home)
    assert r.code == code
    assert error in r.err
    assert not (home / "analysts.yaml").exists()


def test_removing_a_role_someone_lacks_is_refused(home: Path) -> None:
    lib.add(home, "alice", ["da"], "root")
    r = cli("remove", "alice", "-r", "aod", "--home", home)
    assert (r.code, r.err) == (3, "Error: alice does not have the role aod (has: da) — "
                                  "see 'docket analysts list'\n")


def test_an_email_belongs_to_one_user(home: Path) -> None:
    lib.add(home, "alice", ["da"], "root", emails=["a@example.org"])
    with pytest.raises(Invalid, match="email 'A@example.org' is listed for both 'alice' and "
                                      "'bob'"):
        lib.add(home, "bob", ["da"], "root", emails=["A@example.org"])
    assert lib.load_analysts(home).users() == ["alice"]


def test_once_there_is_an_operator_only_operators_edit(home: Path) -> None:
    lib.add(home, "alice", ["da"], "alice")  # nobody is operator yet: anyone may
    lib.add(home, "olga", ["operator"], "alice")
    before = (home / "analysts.yaml").read_bytes()
    with pytest.raises(lib.NotAuthorized) as caught:
        lib.add(home, "alice", ["aod"], "alice")
    assert str(caught.value) == (f"alice may not change {home}/analysts.yaml: only an "
                                 "operator may (olga) — ask an operator to make the change")
    with pytest.raises(lib.NotAuthorized):
        lib.remove(home, "olga", "alice")
    assert (home / "analysts.yaml").read_bytes() == before
    assert lib.add(home, "alice", ["aod"], "olga").roles_after == ["aod", "da"]
    assert lib.add(home, "bob", ["da"], "root").changed  # root may always


def test_the_last_operator_stays(home: Path) -> None:
    lib.add(home, "olga", ["operator", "da"], "root")
    with pytest.raises(lib.NotAuthorized, match="olga is the last operator in .* — add "
                                                "another operator first"):
        lib.remove(home, "olga", "olga", roles=["operator"])
    lib.add(home, "oscar", ["operator"], "olga")
    assert lib.remove(home, "olga", "olga", roles=["operator"]).roles_after == ["da"]
    assert lib.load_analysts(home).with_role("operator") == ["oscar"]


def test_an_edit_keeps_the_file_mode_and_leaves_no_temporary(home: Path) -> None:
    path = home / "analysts.yaml"
    lib.add(home, "alice", ["da"], "root")
    os.chmod(path, 0o664)
    inode = path.stat().st_ino
    lib.add(home, "bob", ["da"], "root")
    assert stat.S_IMODE(path.stat().st_mode) == 0o664
    assert path.stat().st_ino != inode  # a new file renamed into place, not rewritten
    assert sorted(p.name for p in home.iterdir()) == ["analysts.yaml", "analysts.yaml.lock"]


def _add_one(args: tuple[str, int]) -> str:
    home, i = args
    return lib.add(home, f"user{i:02d}", ["da"], "root").user


def test_concurrent_edits_all_land(home: Path) -> None:
    users = [f"user{i:02d}" for i in range(12)]
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(6, mp_context=context) as pool:
        done = list(pool.map(_add_one, [(str(home), i) for i in range(12)]))
    assert done == users
    assert lib.load_analysts(home).users() == users


def test_an_edit_waits_for_the_lock_then_fails_naming_it(home: Path) -> None:
    import fcntl

    fd = os.open(home / "analysts.yaml.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(Locked) as caught, lib._edit_lock(home / "analysts.yaml",
                                                              timeout_s=0.2):
            pass
        assert str(caught.value) == (f"{home}/analysts.yaml is being edited by another "
                                     "process — try again in a moment")
    finally:
        os.close(fd)


# identity ---------------------------------------------------------------------------


def test_the_owner_of_a_file(tmp_path: Path, test_user: Account) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("x")
    assert lib.user_of_file(mine) == pwd.getpwuid(os.getuid()).pw_name
    theirs = tmp_path / "theirs.yaml"
    theirs.write_text("x")
    os.chown(theirs, test_user.uid, test_user.gid)
    assert lib.user_of_file(theirs) == test_user.name
    link = tmp_path / "link.yaml"
    link.symlink_to(theirs)
    assert lib.user_of_file(link) == pwd.getpwuid(os.getuid()).pw_name  # the link's owner


def test_a_file_owned_by_an_unknown_uid(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file away")
    uid = 61000
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            break
        uid += 1
    path = tmp_path / "orphan.yaml"
    path.write_text("x")
    os.chown(path, uid, -1)
    assert lib.user_of_file(path) == str(uid)
    assert lib.groups_of(str(uid)) == set()


def test_groups_and_submitters(test_user: Account) -> None:
    u = test_user
    assert lib.groups_of(u.name) == {u.group, u.extra_group}
    assert lib.groups_of("no-such-user-here") == set()
    assert lib.may_submit(u.name, None)  # the capability says nothing: anyone
    assert not lib.may_submit(u.name, [])  # an empty list: nobody
    assert lib.may_submit(u.name, [u.name])
    assert lib.may_submit(u.name, ["root", f"@{u.extra_group}"])
    assert lib.may_submit(u.name, [f"@{u.group}"])
    assert not lib.may_submit(u.name, ["root", "@no-such-group"])
    assert not lib.may_submit("root", [f"@{u.extra_group}"])
    assert not lib.may_submit("someone@example.org", [f"@{u.group}"])


def test_a_non_operator_user_cannot_edit(shared_home: Path, test_user: Account) -> None:
    lib.add(shared_home, "olga", ["operator"], "root")
    os.chmod(shared_home / "analysts.yaml", 0o666)
    os.chmod(shared_home / "analysts.yaml.lock", 0o666)
    before = (shared_home / "analysts.yaml").read_bytes()
    r = as_user(test_user, lambda: cli("add", test_user.name, "-r", "operator",
                                       "--home", str(shared_home)))
    assert r.code == 1
    assert r.err == (f"Error: {test_user.name} may not change {shared_home}/analysts.yaml: "
                     "only an operator may (olga) — ask an operator to make the change\n")
    assert (shared_home / "analysts.yaml").read_bytes() == before


def test_an_operator_user_edits_and_the_group_is_kept(shared_home: Path,
                                                      test_user: Account) -> None:
    import grp

    path = shared_home / "analysts.yaml"
    lib.add(shared_home, test_user.name, ["operator"], "root")
    # the list is shared by a group of DAs: the edit must not take it away from them
    os.chown(path, 0, grp.getgrnam(test_user.extra_group).gr_gid)
    os.chmod(path, 0o664)
    os.chmod(shared_home / "analysts.yaml.lock", 0o666)
    r = as_user(test_user, lambda: cli("add", "alice", "-r", "da",
                                       "--home", str(shared_home)))
    assert (r.code, r.out, r.err) == (0, "alice: no role → da\n", "")
    st = path.stat()
    assert st.st_uid == test_user.uid
    assert grp.getgrgid(st.st_gid).gr_name == test_user.extra_group
    assert stat.S_IMODE(st.st_mode) == 0o664
    assert lib.load_analysts(shared_home).roles_of("alice") == {"da"}


def test_unknown_user_is_not_found_error_type(home: Path) -> None:
    with pytest.raises(NotFound):
        lib.remove(home, "nobody-here", "root")


def test_a_home_the_user_cannot_write(shared_home: Path, test_user: Account) -> None:
    lib.add(shared_home, test_user.name, ["operator"], "root")
    os.chmod(shared_home, 0o755)  # readable, not writable, by the test user
    r = as_user(test_user, lambda: cli("add", "alice", "-r", "da",
                                       "--home", str(shared_home)))
    assert (r.code, r.out) == (1, "")
    assert r.err == (f"Error: cannot write {shared_home}/analysts.yaml: permission denied — "
                     f"ask the owner of {shared_home} for write access\n")
    assert lib.load_analysts(shared_home).users() == [test_user.name]
