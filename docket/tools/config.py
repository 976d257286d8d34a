"""Settings of the standalone tools: flag, then ``DOCKET_*`` environment, then file.

The file is YAML with one section per tool::

    productfetcher:
      catalog: /archive/catalog.json
    deliver:
      local_root: /lustre/deliveries

It is found at ``--config PATH``, else ``$DOCKET_TOOLS_CONFIG``, else
``$DOCKET_HOME/tools.yaml``, else ``./tools.yaml``; none is required. A single
setting can be overridden with ``DOCKET_<TOOL>_<KEY>`` (``DOCKET_DELIVER_LOCAL_ROOT``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from docket.errors import Invalid

__all__ = ["config_path", "load_tool_config"]


def config_path(explicit: Path | None = None) -> Path | None:
    if explicit is not None:
        return explicit
    env = os.environ.get("DOCKET_TOOLS_CONFIG")
    if env:
        return Path(env)
    home = os.environ.get("DOCKET_HOME")
    for candidate in ([Path(home) / "tools.yaml"] if home else []) + [Path("tools.yaml")]:
        if candidate.is_file():
            return candidate
    return None


def load_tool_config(tool: str, explicit: Path | None = None,
                     flags: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings of ``tool``: file section, overridden by environment, then flags.

    ``flags`` holds command-line values; ``None`` means "not given".
    """
    settings: dict[str, Any] = {}
    path = config_path(explicit)
    if path is not None:
        if not path.is_file():
            raise Invalid(f"tools config {path} does not exist",
                          "create it or drop --config / DOCKET_TOOLS_CONFIG")
        import yaml

        try:
            data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader",
                                                              yaml.SafeLoader)) or {}
        except yaml.YAMLError as exc:
            raise Invalid(f"tools config {path} is not valid YAML: {exc}",
                          "fix the YAML syntax") from exc
        if not isinstance(data, dict):
            raise Invalid(f"tools config {path} must be a mapping of tool sections")
        section = data.get(tool) or {}
        if not isinstance(section, dict):
            raise Invalid(f"tools config {path}: section {tool!r} must be a mapping")
        settings.update(section)
    prefix = f"DOCKET_{tool.upper().replace('-', '_')}_"
    for key, value in os.environ.items():
        if key.startswith(prefix):
            settings[key[len(prefix):].lower()] = value
    for key, value in (flags or {}).items():
        if value is not None:
            settings[key] = value
    return settings
