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
from docket.tools.markers import ACTIVE_MARKER

__all__ = ["Home", "resolve_home", "ACTIVE_MARKER"]


@dataclass
class Home:
    root: Path
    overrides: dict[str, Any]

    @cached_property
    def config(self) -> Any:
        from pydantic import ValidationError

        from docket.documents import DocumentError, load_yaml
        from schemas.home import HomeConfig

        data: dict[str, Any] = {}
        path = self.root / "docket.yaml"
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

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def incoming(self) -> Path:
        return self.spool / "incoming"

    @property
    def accepted(self) -> Path:
        return self.spool / "accepted"

    @property
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


def resolve_home(home: Path | None = None, **overrides: Any) -> Home:
    root = home or Path(os.environ.get("DOCKET_HOME") or ".")
    return Home(root.resolve(), overrides)
