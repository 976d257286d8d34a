"""A docket home: the spool, the state, the templates and the work area, with settings.

Settings come from ``<home>/docket.yaml``, overridden by ``DOCKET_<SETTING>`` environment
variables, overridden by flags, in that order. The home itself is ``--home``, else
``$DOCKET_HOME``, else the current directory (the repository is the embedded home).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from docket.errors import Invalid
from docket.procdir import ACTIVE_MARKER

__all__ = ["Home", "resolve_home", "create_home", "repository_home", "REPOSITORY",
           "REPOSITORY_SETTINGS", "ACTIVE_MARKER"]

# The checkout docket runs from: its templates/ are the shipped capabilities, and the
# checkout itself is the embedded home ('make run').
REPOSITORY = Path(__file__).resolve().parents[1]


# A repository that holds only requests names its capabilities here (the leading dot
# keeps GitOps intake from reading it as a document): 'docket validate' and the
# pre-commit hook use it as their home.
REPOSITORY_SETTINGS = ".docket.yaml"


@dataclass
class Home:
    root: Path
    overrides: dict[str, Any]
    settings_file: str = "docket.yaml"

    @cached_property
    def config(self) -> Any:
        from pydantic import ValidationError

        from docket.documents import DocumentError, load_yaml
        from schemas.home import HomeConfig

        data: dict[str, Any] = {}
        path = self.root / self.settings_file
        if path.is_file():
            try:
                loaded, _ = load_yaml(path.read_bytes(), what="file")
            except DocumentError as exc:
                raise Invalid(f"{path}: {exc}", "fix the home configuration") from None
            if not isinstance(loaded, dict):
                raise Invalid(f"{path}: must be a mapping of settings")
            data.update(loaded)
        for name in HomeConfig.model_fields:
            env = os.environ.get(f"DOCKET_{name.upper()}")
            if env is not None:
                data[name] = env
        data.update({k: v for k, v in self.overrides.items() if v is not None})
        try:
            return HomeConfig.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise Invalid(f"setting {'.'.join(map(str, err['loc']))}: {err['msg']}",
                          f"fix {path} or the DOCKET_* environment") from None

    def _dir(self, setting: str | None, default: str) -> Path:
        value = getattr(self.config, setting) if setting else None
        path = Path(value) if value else self.root / default
        return path if path.is_absolute() else self.root / path

    # the spool's folders are cached: intake asks for them for every document
    @cached_property
    def spool(self) -> Path:
        return self.root / "spool"

    @cached_property
    def incoming(self) -> Path:
        return self.spool / "incoming"

    @cached_property
    def accepted(self) -> Path:
        return self.spool / "accepted"

    @cached_property
    def rejected(self) -> Path:
        return self.spool / "rejected"

    @property
    def attachments(self) -> Path:
        return self._dir("attachments_dir", "spool/attachments")

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def database(self) -> Path:
        return self.state_dir / "docket.db"

    @property
    def log_file(self) -> Path:
        """Where docket writes what went wrong, with tracebacks, for an operator."""
        return self.state_dir / "docket.log"

    @property
    def intake_lock(self) -> Path:
        return self.state_dir / "intake.lock"

    @property
    def templates(self) -> Path:
        return self._dir("templates_dir", "templates")

    @property
    def work(self) -> Path:
        return self._dir("work_dir", "work")

    @property
    def tools_dir(self) -> Path:
        value = self.config.tools_dir
        return Path(value) if value else Path(sys.executable).parent

    def ensure(self) -> None:
        for path in (self.incoming, self.accepted, self.rejected, self.state_dir):
            path.mkdir(parents=True, exist_ok=True)


def repository_home(start: Path) -> Home | None:
    """The ``.docket.yaml`` of the git repository ``start`` is in (looking up from
    ``start`` to the repository's top), as a home whose settings are that file."""
    for folder in (start.resolve(), *start.resolve().parents):
        if (folder / REPOSITORY_SETTINGS).is_file():
            return Home(folder, {}, REPOSITORY_SETTINGS)
        if (folder / ".git").exists():
            return None
    return None


def resolve_home(home: Path | None = None, **overrides: Any) -> Home:
    root = home or Path(os.environ.get("DOCKET_HOME") or ".")
    return Home(root.resolve(), overrides)


_SETTINGS = """\
# docket home settings; DOCKET_<SETTING> variables and flags override them. Every
# setting: schemas/home.py. Relative paths are relative to this folder.

# Capabilities: one folder each (capability.yaml + Jinja2 templates). Point this at a
# shared folder, or copy the shipped ones here and add your own (docs/capabilities.md).
templates_dir: {templates}

# Processing directories: work/<request>/v<N>/e<M> for each execution.
work_dir: work

# A request's spec.files are taken from here.
attachments_dir: spool/attachments
"""


def create_home(root: Path, templates_dir: Path) -> Home:
    """Make a new home at ``root``: ``docket.yaml``, the spool, state and work folders.

    ``root`` may exist but must not hold anything yet (a home is never overwritten).
    """
    root = root.resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        what = "is a docket home already" if (root / "docket.yaml").exists() else (
            "is not empty" if root.is_dir() else "exists and is not a directory")
        raise Invalid(f"{root} {what}", "choose a new or empty directory")
    if root == REPOSITORY or REPOSITORY in root.parents:
        raise Invalid(f"{root} is inside the docket repository, which is its own embedded "
                      "home", "choose a directory outside the repository")
    root.mkdir(parents=True, exist_ok=True)
    import json

    from docket.fileio import atomic_write

    # a JSON string is a YAML string: a path with ': ' or '#' in it stays one path
    atomic_write(root / "docket.yaml",
                 _SETTINGS.format(templates=json.dumps(str(templates_dir.resolve()))))
    home = Home(root, {})
    home.ensure()
    for path in (home.attachments, home.work):
        path.mkdir(parents=True, exist_ok=True)
    return home
