"""GitSource on real repositories: a bare "origin", a clone docket reads, and a
"workstation" clone where analysts commit as themselves and push."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from docket.errors import ExternalFailure, Invalid, NotFound
from docket.gitsource import GitDocument, GitSource, is_document_path

ALICE = ("Alice Analyst", "alice@example.org")
BOB = ("Bob Builder", "bob@example.org")


@pytest.fixture(autouse=True)
def _plain_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user or system git configuration: only what the test says."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    (tmp_path / "gitconfig").write_text("[protocol \"file\"]\n\tallow = always\n")


def git(cwd: Path, *args: str, author: tuple[str, str] = ALICE,
        env: dict[str, str] | None = None, check: bool = True) -> str:
    done = subprocess.run(
        ["git", "-c", f"user.name={author[0]}", "-c", f"user.email={author[1]}", *args],
        cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip()


class Repos:
    """origin (bare) ← workstation (where people commit) ; checkout (what docket reads)."""

    def __init__(self, root: Path) -> None:
        self.origin = root / "origin.git"
        self.work = root / "workstation"
        self.checkout = root / "checkout"
        git(root, "init", "-q", "--bare", "-b", "main", str(self.origin))
        git(root, "clone", "-q", str(self.origin), str(self.work))
        self.commit({"README.md": "requests for the survey\n"}, ALICE, "start")
        git(root, "clone", "-q", str(self.origin), str(self.checkout))

    def commit(self, files: dict[str, str | None], author: tuple[str, str] = ALICE,
               message: str = "change", *, push: bool = True, sign: str | None = None,
               env: dict[str, str] | None = None) -> str:
        for path, text in files.items():
            target = self.work / path
            if text is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
        git(self.work, "add", "-A")
        signing = ["-c", f"user.signingkey={sign}", "commit", "-q", "-S"] if sign else [
            "commit", "-q"]
        git(self.work, *signing, "-m", message, author=author, env=env)
        if push:
            git(self.work, "push", "-q", "origin", "main")
        return git(self.work, "rev-parse", "HEAD")

    def source(self, **options: object) -> GitSource:
        return GitSource(self.checkout, **options)  # type: ignore[arg-type]


@pytest.fixture
def repos(tmp_path: Path) -> Repos:
    return Repos(tmp_path)


def request(name: str, capability: str = "demo") -> str:
    return (f"apiVersion: docket/v1\nkind: CapabilityRequest\nmetadata:\n  name: {name}\n"
            f"spec:\n  capability: {capability}\n")


def blob_of(repo: Path, path: str) -> str:
    return git(repo, "rev-parse", f"HEAD:{path}")


def by_path(docs: list[GitDocument]) -> dict[str, GitDocument]:
    return {d.path: d for d in docs}


# scanning -----------------------------------------------------------------------------


def test_new_documents_carry_their_commit_and_author(repos: Repos) -> None:
    c1 = repos.commit({"requests/a.yaml": request("a")}, ALICE, "a")
    c2 = repos.commit({"requests/b.yml": request("b")}, BOB, "b")
    source = repos.source()
    assert source.pull().ok
    scan = source.scan({})
    assert scan.head == c2
    assert [d.path for d in scan.changed] == ["requests/a.yaml", "requests/b.yml"]
    a, b = scan.changed
    assert a.raw == request("a").encode()
    assert a.blob == blob_of(repos.checkout, "requests/a.yaml")
    assert (a.commit, a.author_name, a.author_email) == (c1, *ALICE)
    assert (b.commit, b.author_name, b.author_email) == (c2, *BOB)
    assert b.author == "Bob Builder <bob@example.org>"
    assert a.signature == "N" and not a.signed and a.problem is None
    assert a.authored_at and a.authored_at[:4].isdigit()
    assert scan.vanished == [] and scan.unchanged == 0


def test_a_changed_file_is_a_new_blob_by_its_new_author(repos: Repos) -> None:
    repos.commit({"a.yaml": request("a"), "b.yaml": request("b")}, ALICE)
    source = repos.source()
    source.pull()
    known = {d.path: d.blob for d in source.scan({}).changed}
    assert source.scan(known).changed == []
    c = repos.commit({"a.yaml": request("a") + "  priority: 5\n"}, BOB, "raise a")
    source.pull()
    scan = source.scan(known)
    assert [d.path for d in scan.changed] == ["a.yaml"]
    doc = scan.changed[0]
    assert doc.blob != known["a.yaml"]
    assert doc.blob == blob_of(repos.checkout, "a.yaml")
    assert (doc.commit, doc.author_email) == (c, BOB[1])
    assert scan.unchanged == 1


def test_a_deleted_file_has_vanished_and_nothing_else(repos: Repos) -> None:
    repos.commit({"a.yaml": request("a"), "b.yaml": request("b")})
    source = repos.source()
    source.pull()
    known = {d.path: d.blob for d in source.scan({}).changed}
    repos.commit({"a.yaml": None}, BOB, "drop a")
    source.pull()
    scan = source.scan(known)
    assert (scan.changed, scan.vanished, scan.unchanged) == ([], ["a.yaml"], 1)


def test_a_renamed_file_is_a_vanished_path_and_a_new_one(repos: Repos) -> None:
    repos.commit({"a.yaml": request("a")}, ALICE)
    source = repos.source()
    source.pull()
    known = {d.path: d.blob for d in source.scan({}).changed}
    (repos.work / "old").mkdir()
    git(repos.work, "mv", "a.yaml", "old/a.yaml")
    git(repos.work, "commit", "-q", "-m", "file it", author=BOB)
    git(repos.work, "push", "-q", "origin", "main")
    source.pull()
    scan = source.scan(known)
    assert scan.vanished == ["a.yaml"]
    [moved] = scan.changed
    # the same content: the core sees a duplicate; the mover is who put it there
    assert (moved.path, moved.blob, moved.author_email) == ("old/a.yaml", known["a.yaml"],
                                                            BOB[1])


def test_only_committed_yaml_outside_dot_directories_counts(repos: Repos) -> None:
    repos.commit({
        "ok.yaml": request("ok"), "deep/er/ok.yml": request("deep"),
        ".hidden.yaml": request("hidden"), ".github/workflows/ci.yml": "on: push\n",
        "dir/.draft.yaml": request("draft"), "notes.txt": "x\n", "a.yaml.bak": "x\n",
        "YAML.md": "x\n"})
    os.symlink("ok.yaml", repos.work / "link.yaml")
    repos.commit({}, ALICE, "a symlink")
    source = repos.source()
    source.pull()
    # what lies in the checkout but is not committed is not read either
    (repos.checkout / "untracked.yaml").write_text(request("untracked"))
    (repos.checkout / "staged.yaml").write_text(request("staged"))
    git(repos.checkout, "add", "staged.yaml")
    (repos.checkout / "ok.yaml").write_text(request("edited-in-place"))
    scan = source.scan({})
    assert [d.path for d in scan.changed] == ["deep/er/ok.yml", "ok.yaml"]
    assert by_path(scan.changed)["ok.yaml"].raw == request("ok").encode()


def test_is_document_path() -> None:
    assert is_document_path("a.yaml") and is_document_path("x/y/b.yml")
    assert not is_document_path(".a.yaml")
    assert not is_document_path("x/.y/b.yml")
    assert not is_document_path("a.json")


def test_a_directory_inside_the_checkout_as_the_source(repos: Repos) -> None:
    repos.commit({"requests/a.yaml": request("a"), "templates/demo/capability.yaml": "x\n"})
    GitSource(repos.checkout).pull()
    source = GitSource(repos.checkout / "requests")
    scan = source.scan({"gone.yaml": "0" * 40})
    assert [d.path for d in scan.changed] == ["a.yaml"]
    assert scan.vanished == ["gone.yaml"]


def test_documents_come_oldest_commit_first(repos: Repos) -> None:
    repos.commit({"z-request.yaml": request("z")}, ALICE, "request")
    repos.commit({"a-decision.yaml": request("a")}, BOB, "decision")
    repos.commit({"m.yaml": request("m"), "b.yaml": request("b")}, ALICE, "two more")
    source = repos.source()
    source.pull()
    assert [d.path for d in source.scan({}).changed] == [
        "z-request.yaml", "a-decision.yaml", "b.yaml", "m.yaml"]


def test_the_author_of_a_merge(repos: Repos) -> None:
    repos.commit({"shared.yaml": request("shared"), "side.yaml": request("side")}, ALICE)
    git(repos.work, "checkout", "-q", "-b", "side")
    side = repos.commit({"shared.yaml": request("shared") + "# side\n",
                         "side.yaml": request("side") + "# side\n"}, BOB, push=False)
    git(repos.work, "checkout", "-q", "main")
    repos.commit({"shared.yaml": request("shared") + "# main\n"}, ALICE, push=False)
    git(repos.work, "merge", "-q", "side", check=False)  # a conflict in shared.yaml
    carol = ("Carol Merger", "carol@example.org")
    merge = repos.commit({"shared.yaml": request("shared") + "# resolved\n"}, carol, "merge")
    source = repos.source()
    source.pull()
    docs = by_path(source.scan({}).changed)
    # what the merge resolved is the merger's; what came from the branch keeps its author
    assert (docs["shared.yaml"].commit, docs["shared.yaml"].author_email) == (merge, carol[1])
    assert (docs["side.yaml"].commit, docs["side.yaml"].author_email) == (side, BOB[1])


def test_a_document_over_the_size_limit_is_not_read(repos: Repos) -> None:
    big = request("big") + "#" * 5000 + "\n"
    repos.commit({"big.yaml": big, "small.yaml": request("s")})
    source = repos.source(max_bytes=2048)
    source.pull()
    docs = by_path(source.scan({}).changed)
    assert docs["big.yaml"].raw == b""
    assert docs["big.yaml"].problem == (f"the document is {len(big)} bytes, over the limit "
                                        "of 2048 bytes")
    assert docs["small.yaml"].problem is None


def test_a_shallow_clone_names_no_author_for_what_predates_it(repos: Repos,
                                                              tmp_path: Path) -> None:
    repos.commit({"old.yaml": request("old")}, ALICE)
    new = repos.commit({"new.yaml": request("new")}, BOB)
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repos.origin}", str(shallow))
    edge = git(shallow, "rev-parse", "HEAD")
    for doc in GitSource(shallow).scan({}).changed:
        # the edge of a shallow clone shows every file as added there: nobody is known
        assert (doc.commit, doc.author_email) == (None, None)
        assert doc.problem == (
            f"the clone is shallow and the file's history is cut at commit {edge[:12]}, so "
            f"who last changed it is unknown; run 'git fetch --unshallow' in {shallow}")
    git(shallow, "fetch", "-q", "--unshallow")
    docs = by_path(GitSource(shallow).scan({}).changed)
    assert (docs["new.yaml"].commit, docs["new.yaml"].problem) == (new, None)
    assert docs["old.yaml"].author_email == ALICE[1]


def test_not_a_checkout(tmp_path: Path, repos: Repos) -> None:
    with pytest.raises(NotFound) as caught:
        GitSource(tmp_path / "nowhere")
    assert str(caught.value) == (f"{tmp_path}/nowhere does not exist or is not a directory — "
                                 "clone the repository first: git clone URL REPO_DIR")
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotFound, match="plain is not a git checkout .*not a git repository"):
        GitSource(tmp_path / "plain")
    with pytest.raises(Invalid, match="is inside a bare repository"):
        GitSource(repos.origin)


def test_a_repository_with_no_commit_yet(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "main", "empty")
    source = GitSource(tmp_path / "empty")
    assert source.head() is None
    scan = source.scan({"a.yaml": "0" * 40})
    assert (scan.head, scan.changed, scan.vanished) == (None, [], ["a.yaml"])
    assert source.pull().ok


def test_git_missing(repos: Repos) -> None:
    with pytest.raises(ExternalFailure, match="no-such-git is not installed or not on PATH"):
        GitSource(repos.checkout, git="no-such-git")


# pulling ------------------------------------------------------------------------------


def test_pull_fast_forwards(repos: Repos) -> None:
    source = repos.source()
    before = source.head()
    new = repos.commit({"a.yaml": request("a")})
    result = source.pull()
    assert (result.ok, result.pulled, result.before, result.after) == (True, True, before, new)
    assert result.changed
    assert result.message == f"fast-forwarded to origin/main: {before[:12]}..{new[:12]}"
    assert (repos.checkout / "a.yaml").read_text() == request("a")
    again = source.pull()
    assert (again.ok, again.changed, again.message) == (
        True, False, "already up to date with origin/main")


def _snapshot(checkout: Path) -> dict[str, bytes]:
    return {str(p.relative_to(checkout)): p.read_bytes() for p in checkout.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(checkout).parts}


def test_a_pull_that_is_not_a_fast_forward_leaves_the_checkout(repos: Repos) -> None:
    repos.commit({"a.yaml": request("a")}, ALICE, "a")
    source = repos.source()
    source.pull()
    seen = source.scan({})
    before, files = source.head(), _snapshot(repos.checkout)
    # someone rewrites history on origin
    git(repos.work, "reset", "-q", "--hard", "HEAD~1")
    repos.commit({"b.yaml": request("b")}, BOB, "rewritten", push=False)
    git(repos.work, "push", "-q", "--force", "origin", "main")
    result = source.pull()
    assert not result.ok
    assert (result.before, result.after, result.changed) == (before, before, False)
    assert result.message == ("git pull from origin/main failed: fatal: Not possible to "
                              "fast-forward, aborting.")
    assert source.head() == before
    assert _snapshot(repos.checkout) == files
    assert source.scan({}) == seen  # docket keeps reading what it had
    assert source.pull() == result  # the next tick retries, and says the same


def test_a_pull_blocked_by_a_local_edit_leaves_the_checkout(repos: Repos) -> None:
    repos.commit({"a.yaml": request("a")})
    source = repos.source()
    source.pull()
    repos.commit({"a.yaml": request("a") + "  priority: 1\n"}, BOB)
    (repos.checkout / "a.yaml").write_text("edited by hand on the docket machine\n")
    before, files = source.head(), _snapshot(repos.checkout)
    result = source.pull()
    assert (result.ok, result.after) == (False, before)
    assert result.message == (
        "git pull from origin/main failed: error: Your local changes to the following files "
        "would be overwritten by merge: a.yaml Please commit your changes or stash them "
        "before you merge. Aborting")
    assert _snapshot(repos.checkout) == files
    git(repos.checkout, "checkout", "--", "a.yaml")  # someone cleans up; the next pull works
    assert source.pull().ok
    assert source.head() == git(repos.work, "rev-parse", "HEAD")


def test_a_pull_from_a_remote_that_is_gone(repos: Repos) -> None:
    shutil.rmtree(repos.origin)
    source = repos.source()
    before = source.head()
    result = source.pull()
    assert (result.ok, result.after) == (False, before)
    assert "does not appear to be a git repository" in result.message
    assert result.message.startswith("git pull from origin/main failed: fatal: ")


def test_a_pull_that_hangs_is_stopped_and_reported(repos: Repos) -> None:
    # a server that never answers: ssh that just waits
    git(repos.checkout, "remote", "set-url", "origin", "ssh://git.example.invalid/r.git")
    git(repos.checkout, "config", "core.sshCommand", "sleep 60 #")
    source = repos.source(timeout_s=1)
    before, files = source.head(), _snapshot(repos.checkout)
    result = source.pull()
    assert (result.ok, result.after) == (False, before)
    assert result.message == (
        f"git pull from origin/main failed: git fetch in {repos.checkout} did not finish in "
        "1 s — check the network and the remote; the next tick tries again")
    assert _snapshot(repos.checkout) == files
    assert not (repos.checkout / ".git" / "index.lock").exists()


def test_no_upstream_is_nothing_to_pull(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "main", "local")
    (tmp_path / "local" / "a.yaml").write_text(request("a"))
    git(tmp_path / "local", "add", "a.yaml")
    git(tmp_path / "local", "commit", "-q", "-m", "a")
    source = GitSource(tmp_path / "local")
    result = source.pull()
    assert (result.ok, result.pulled, result.changed) == (True, False, False)
    assert result.message == "no upstream branch is configured; nothing to pull"
    assert [d.path for d in source.scan({}).changed] == ["a.yaml"]


def test_a_detached_head_is_nothing_to_pull(repos: Repos) -> None:
    repos.commit({"a.yaml": request("a")})
    git(repos.checkout, "checkout", "-q", "--detach", "HEAD")
    result = repos.source().pull()
    assert (result.ok, result.pulled) == (True, False)
    assert result.message == "HEAD is detached (not on a branch); nothing to pull"


# signatures ---------------------------------------------------------------------------


def test_require_signed_rejects_an_unsigned_commit(repos: Repos) -> None:
    c = repos.commit({"a.yaml": request("a")}, BOB, "unsigned")
    repos.source().pull()
    [doc] = repos.source().scan({}).changed
    assert (doc.signature, doc.problem) == ("N", None)
    [doc] = repos.source(require_signed=True).scan({}).changed
    assert doc.signature == "N" and not doc.signed
    assert doc.problem == (f"commit {c[:12]} by Bob Builder <bob@example.org>, which last "
                           "changed it, is not signed; this home accepts only signed commits "
                           "(require_signed)")
    assert doc.raw == request("a").encode()  # still readable, for the rejection record


def _gpg_home(path: Path, uid: str) -> str:
    """A keyring in ``path`` with a new signing key for ``uid``; returns its fingerprint."""
    path.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(path)}
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519",
                    "sign", "never"], env=env, check=True, capture_output=True)
    out = subprocess.run(["gpg", "--batch", "--with-colons", "--list-secret-keys"], env=env,
                         check=True, capture_output=True, text=True).stdout
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


@pytest.fixture
def keyrings(tmp_path: Path) -> Iterator[dict[str, tuple[Path, str]]]:
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed: only the unsigned path is tested "
                    "(test_require_signed_rejects_an_unsigned_commit)")
    homes = {"alice": tmp_path / "gpg-alice", "mallory": tmp_path / "gpg-mallory"}
    try:
        yield {who: (home, _gpg_home(home, f"{who} <{who}@example.org>"))
               for who, home in homes.items()}
    finally:
        for home in homes.values():
            if home.exists():
                subprocess.run(["gpgconf", "--kill", "all"], capture_output=True,
                               env={**os.environ, "GNUPGHOME": str(home)})


def test_require_signed_accepts_a_good_signature_only(
        repos: Repos, keyrings: dict[str, tuple[Path, str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    alice_home, alice_key = keyrings["alice"]
    mallory_home, mallory_key = keyrings["mallory"]
    good = repos.commit({"good.yaml": request("good")}, ALICE, "signed", sign=alice_key,
                        env={"GNUPGHOME": str(alice_home)})
    stranger = repos.commit({"stranger.yaml": request("stranger")}, BOB, "signed by a "
                            "stranger", sign=mallory_key, env={"GNUPGHOME": str(mallory_home)})
    repos.commit({"plain.yaml": request("plain")}, BOB, "not signed")
    posing = repos.commit({"posing.yaml": request("posing")}, BOB, "alice signs as bob",
                          sign=alice_key, env={"GNUPGHOME": str(alice_home)})
    # docket verifies with the keyring of the user it runs as: here, one that trusts alice
    monkeypatch.setenv("GNUPGHOME", str(alice_home))
    source = repos.source(require_signed=True)
    source.pull()
    docs = by_path(source.scan({}).changed)
    assert (docs["good.yaml"].commit, docs["good.yaml"].signature) == (good, "G")
    assert docs["good.yaml"].signed and docs["good.yaml"].problem is None
    assert docs["good.yaml"].signing_key == alice_key[-16:] or \
        alice_key.endswith(docs["good.yaml"].signing_key)
    assert docs["stranger.yaml"].signature == "E"
    assert docs["stranger.yaml"].problem == (
        f"commit {stranger[:12]} by Bob Builder <bob@example.org>, which last changed it, has "
        "a signature that cannot be checked (is the signer's public key in the keyring "
        "docket uses?); this home accepts only signed commits (require_signed)")
    assert "is not signed" in docs["plain.yaml"].problem
    assert docs["posing.yaml"].signature == "G"
    assert docs["posing.yaml"].problem == (
        f"commit {posing[:12]}, which last changed it, is authored as Bob Builder "
        "<bob@example.org> but signed by alice <alice@example.org>; with require_signed the "
        "signer must be the author")
    # without require_signed the signature is reported, not judged
    relaxed = by_path(repos.source().scan({}).changed)
    assert {d.problem for d in relaxed.values()} == {None}
    assert relaxed["posing.yaml"].signer == "alice <alice@example.org>"


def test_a_repository_of_thousands_of_files(tmp_path: Path) -> None:
    """2,000 documents in 200 commits, then 100 edits: every author right."""
    repo = tmp_path / "big"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    stream = []
    for c in range(300):
        mark = c + 1
        who = f"Analyst{c % 7}"
        stream.append(f"commit refs/heads/main\nmark :{mark}\n"
                      f"author {who} <{who.lower()}@example.org> {1700000000 + c} +0000\n"
                      f"committer {who} <{who.lower()}@example.org> {1700000000 + c} +0000\n"
                      f"data {len(str(c))}\n{c}\n" + (f"from :{mark - 1}\n" if mark > 1 else ""))
        files = ([(f"r{c:03d}/q{i}.yaml", request(f"r{c}-{i}")) for i in range(10)]
                 if c < 200 else [(f"r{c % 200:03d}/q{c % 10}.yaml", f"# edit {c}\n")])
        for path, text in files:
            data = text.encode()
            stream.append(f"M 100644 inline {path}\ndata {len(data)}\n{text}\n")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, check=True,
                   input="".join(stream).encode())
    git(repo, "checkout", "-q", "main")
    source = GitSource(repo)
    scan = source.scan({})
    assert len(scan.changed) == 2000
    docs = by_path(scan.changed)
    for path in ("r000/q0.yaml", "r005/q5.yaml", "r099/q9.yaml", "r150/q3.yaml",
                 "r199/q9.yaml"):
        expected = git(repo, "log", "-1", "--format=%H %ae", "--", path)
        assert f"{docs[path].commit} {docs[path].author_email}" == expected, path
    known = {d.path: d.blob for d in scan.changed}
    assert source.scan(known).changed == []
    del known["r042/q2.yaml"]
    assert [d.path for d in source.scan(known).changed] == ["r042/q2.yaml"]
