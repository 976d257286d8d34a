"""The watcher: intake, rules, launching and following, in one loop per home.

``tick`` is one pass (for cron); ``watch`` runs passes whenever the spool changes and
every ``poll_interval_s`` to follow running work. Only one intake runs per home: both
take ``state/intake.lock`` (flock) and a second one fails naming the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from docket.app import Docket, open_home
from docket.capabilities import CapabilityCache
from docket.engines.registry import Engines
from docket.errors import Locked
from docket.home import Home
from docket.intake import Intake, IntakeReport, is_candidate
from docket.launch import Launcher
from docket.notify import run_sender
from docket.rules import Rules
from docket.store import Store, now

__all__ = ["Watcher", "PassReport", "intake_lock", "wait_for_exit"]

log = logging.getLogger("docket.watcher")


@dataclass
class PassReport:
    intake: IntakeReport = field(default_factory=IntakeReport)
    started: list[int] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    git: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.intake.count("accepted"),
                "applied": self.intake.count("applied"),
                "duplicates": self.intake.count("duplicate"),
                "rejected": self.intake.count("rejected"),
                "waiting_files": self.intake.waiting,
                "documents": [o.as_dict() for o in self.intake.outcomes],
                "started": self.started, "ended": self.ended, "stopped": self.stopped,
                **({"git": self.git} if self.git is not None else {})}


@contextlib.contextmanager
def disk_errors_explained() -> Iterator[None]:
    """A full or failing disk (or database) said in one line, not a traceback: in a pass,
    and anywhere else a tick touches the disk (its lock file, a module imported late)."""
    import sqlite3

    from docket.errors import DocketError
    from docket.fileio import is_disk_error

    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        if not (isinstance(exc, sqlite3.Error) or is_disk_error(exc)):
            raise
        raise DocketError(f"this pass stopped: {exc}",
                          "free space on the disk (or repair it); nothing accepted was "
                          "lost and the next pass takes up the rest") from None


# the longest wait of 'docket tick --wait' between two passes that found nothing new
TICK_WAIT_MAX_S = 1.0


@contextlib.contextmanager
def intake_lock(path: Path, what: str) -> Iterator[None]:
    """Hold the home's intake lock, or raise ``Locked`` naming who holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = "another process"
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(os.pread(fd, 4096, 0) or b"{}")
                holder = (f"'{info['command']}' (pid {info['pid']} on {info['host']}, "
                          f"since {info['since']})")
            raise Locked(f"the intake of this home is held by {holder}",
                         "only one 'docket watch' or 'docket tick' runs per home; stop it "
                         "or wait for it") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": what,
                "since": now()}
        with contextlib.suppress(OSError):  # who holds it is a courtesy; a full disk
            os.ftruncate(fd, 0)             # must not keep the intake from starting
            os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)


def wait_for_exit(pids: list[int], timeout_s: float) -> None:
    """Sleep ``timeout_s``, or less: until one of ``pids`` (this process's children, not
    reaped yet) exits. A DAG runner that ends is what the next pass acts on, so waiting
    for it rather than a poll interval saves that interval at the end of every workflow."""
    fds = []
    try:
        for pid in pids:
            with contextlib.suppress(OSError):  # already reaped: nothing to wait for
                fds.append(os.pidfd_open(pid))
        if fds:
            select.select(fds, [], [], timeout_s)
        else:
            time.sleep(timeout_s)
    finally:
        for fd in fds:
            os.close(fd)


class Watcher:
    """The passes over one home. Building one writes nothing (``docket.app``); the
    first pass prepares the home (``Docket.prepare``)."""

    def __init__(self, home: Home | Docket) -> None:
        self.app = home if isinstance(home, Docket) else open_home(home)
        self.home = self.app.home

    # the parts, from the composition root (the database opens on first use)
    @property
    def store(self) -> Store:
        return self.app.store

    @property
    def rules(self) -> Rules:
        return self.app.rules

    @property
    def engines(self) -> Engines:
        return self.app.engines

    @property
    def capabilities(self) -> CapabilityCache:
        return self.app.capabilities

    @property
    def intake(self) -> Intake:
        return self.app.intake

    @cached_property
    def launcher(self) -> Launcher:
        return Launcher(self.home, self.store, self.rules, self.engines.for_site)

    def prepare(self) -> None:
        self.app.prepare()

    def close(self) -> None:
        self.app.close()

    @classmethod
    def open_when_possible(cls, home: Home, stop: threading.Event) -> Watcher | None:
        """A watcher for ``home``, prepared for its first pass, waiting out a full or
        failing disk (logged, retried every few seconds) so that a long-lived watcher
        starts once the disk is back. None when ``stop`` is set first."""
        import sqlite3

        from docket.fileio import is_disk_error

        while not stop.is_set():
            watcher = cls(home)
            try:
                watcher.prepare()
                return watcher
            except (OSError, sqlite3.Error) as exc:
                watcher.close()  # a failing disk may keep failing on the old connection
                if not (isinstance(exc, sqlite3.Error) or is_disk_error(exc)):
                    raise
                log.error("cannot open the home yet (%s); retrying in 5 s", exc)
                stop.wait(5.0)
        return None

    def load_sites(self) -> None:
        """Read sites.yaml (if any) for this pass; a broken file keeps the last good one."""
        self.app.load_sites()

    def step(self, names: list[str] | None = None, git: Any = None,
             pull: bool = True) -> PassReport:
        """One pass: intake, stop what was cancelled, start what queues allow, follow.

        With ``git`` (a GitSource), the checkout is pulled first; a failed pull leaves the
        state untouched (its documents wait for the next pass) and is reported.
        """
        self.prepare()
        report = PassReport()
        self.load_sites()
        report.intake = self.intake.scan(names)
        if git is not None:
            result = git.pull() if pull else None
            report.git = result.as_dict() if result else {"ok": True, "pulled": False}
            if result is None or result.ok:
                report.intake.outcomes.extend(self.intake.scan_git(git).outcomes)
        report.stopped = self.launcher.stop_cancelled()
        with self.store.transaction():
            report.started = self.rules.schedule()
        self.launcher.launch_pending()
        report.ended = self.launcher.follow_running()
        from docket.handoffs import run_pending

        run_pending(self.store, self.home)  # starts and collects; never waits for a tool
        if report.ended:  # finished work frees queue slots now, not a poll later
            with self.store.transaction():
                report.started += self.rules.schedule()
            self.launcher.launch_pending()
        self.engines.reap()
        return report

    def tick(self, git: Any = None, wait: bool = False) -> dict[str, Any]:
        """One pass under the intake lock (for cron); with ``wait``, passes until nothing
        waits to start or runs. Returns the passes' reports added up."""
        with disk_errors_explained():
            return self._tick(git, wait)

    def _tick(self, git: Any, wait: bool) -> dict[str, Any]:
        from docket.engines.local import started_runners
        from docket.handoffs import active as handoffs_active
        from docket.handoffs import started_pids

        total: dict[str, Any] = {}
        # between passes: a runner's or hand-off's exit wakes the wait at once; otherwise
        # the wait doubles while passes find nothing new (up to a second), so a long run
        # is not a pass every poll interval competing with its jobs for the CPU
        pause = 0.0  # the shortest wait once the first pass has read the home's settings
        with intake_lock(self.home.intake_lock, "docket tick"):
            first = True
            while True:
                report = self.step(git=git if first else None).as_dict()
                first = False
                for key, value in report.items():
                    if key == "git":
                        total[key] = value
                    else:
                        total[key] = (total.get(key, 0) + value if isinstance(value, int)
                                      else total.get(key, []) + value)
                busy = self.store.active_count()
                busy += handoffs_active(self.store)  # hand-offs run beside the passes
                if not wait or (busy == 0 and not report["started"]
                                and not report["waiting_files"]):
                    break
                news = (report["documents"] or report["started"] or report["ended"]
                        or report["stopped"] or report["waiting_files"])
                shortest = self.home.config.poll_interval_s / 2
                pause = (shortest if news or not pause
                         else min(pause * 2, max(shortest, TICK_WAIT_MAX_S)))
                wait_for_exit(started_runners() + started_pids(), pause)
        total["waiting_files"] = sorted(set(total.get("waiting_files", [])))
        return total

    def _guarded_step(self, names: list[str] | None = None, git: Any = None,
                      only_intake: bool = False) -> PassReport | None:
        """A pass of the long-lived watcher, which survives anything a pass meets: the
        error goes to the home's log and the next pass tries again."""
        try:
            if not only_intake:
                return self.step(names, git=git)
            self.prepare()
            report = PassReport(intake=self.intake.scan(names))
            with self.store.transaction():
                report.started = self.rules.schedule()
            self.launcher.launch_pending()
            return report
        except Exception as exc:  # noqa: BLE001 - the watcher must outlive it
            import sqlite3

            self.intake.log_error("a pass of the watcher failed (retrying)", exc)
            time.sleep(min(5.0, self.home.config.poll_interval_s * 4))
            if isinstance(exc, sqlite3.Error):
                with contextlib.suppress(sqlite3.Error):
                    self.store.reconnect()
            return None

    def watch(self, *, poll: bool = False, stop: threading.Event | None = None,
              on_pass: Any = None, git: Any = None) -> None:
        """Run until ``stop`` is set (or SIGINT/SIGTERM): the long-lived intake."""
        import watchfiles

        incoming = self.home.incoming
        interval_ms = int(self.home.config.poll_interval_s * 1000)
        with (intake_lock(self.home.intake_lock, "docket watch" + (" --poll" if poll else "")),
              run_sender(self.home) as wake_sender):
            self.prepare()  # watchfiles needs the spool folder before the first pass
            log.info("watching %s (%s)", incoming, "polling" if poll else "inotify")
            report = self._guarded_step(git=git) or PassReport()
            if on_pass:
                on_pass(report)
            next_follow = time.monotonic() + self.home.config.poll_interval_s
            next_pull = time.monotonic() + self.home.config.git_pull_interval_s
            for changes in watchfiles.watch(
                    incoming, step=1, debounce=1, rust_timeout=interval_ms,
                    yield_on_timeout=True, force_polling=poll, poll_delay_ms=10,
                    stop_event=stop, raise_interrupt=False, recursive=False,
                    ignore_permission_denied=True):
                # deletions are intake's own moves: only new or changed files matter
                names = sorted({Path(p).name for c, p in changes
                                if c != watchfiles.Change.deleted
                                and Path(p).parent == incoming and is_candidate(Path(p).name)})
                waiting = report.intake.waiting
                if git is not None and time.monotonic() >= next_pull:
                    done = self._guarded_step(git=git)
                    next_pull = time.monotonic() + self.home.config.git_pull_interval_s
                elif time.monotonic() >= next_follow or not changes or (waiting and names):
                    done = self._guarded_step()  # full pass: rescans files being written
                    next_follow = time.monotonic() + self.home.config.poll_interval_s
                elif names:
                    done = self._guarded_step(names, only_intake=True)
                else:
                    continue
                wake_sender.set()
                if done is None:
                    # a failed pass: the next one rescans everything
                    next_follow = time.monotonic()
                    continue
                report = done
                if on_pass:
                    on_pass(report)


