"""Thin typer applications, one module per tool: parse, call the library, print."""

import os

# The PEX builds leave rich out (pex-build/tools.toml freezes TYPER_USE_RICH=0 in), but a
# user's own TYPER_USE_RICH=1 wins over a frozen value, and typer would then fail on
# --help with "No module named 'rich'". Decided here, before any tool imports typer.
if os.environ.get("TYPER_USE_RICH", "1").lower() not in ("n", "no", "f", "false", "off",
                                                          "0"):
    import importlib.util

    if importlib.util.find_spec("rich") is None:
        os.environ["TYPER_USE_RICH"] = "0"
