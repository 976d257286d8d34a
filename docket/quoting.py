"""The one function that quotes every value reaching a submit file, a DAG or a shell.

Submit and DAG files are line-oriented: a newline in a value would start a new
command, so control characters are refused outright rather than escaped. ``$`` is
written as ``$(DOLLAR)`` so a value can never expand an HTCondor macro (and ``$$``,
which HTCondor would read as a match-time macro whatever we write, is refused). Argument and
environment values use HTCondor's "new" quoted syntax (the whole list in double
quotes, a value with spaces in single quotes, quotes inside doubled), which
``split_arguments`` reads back; the local engine uses it to get the same argv that
HTCondor would.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Literal

from docket.errors import Invalid

__all__ = ["Context", "quote", "quote_arguments", "quote_environment", "split_arguments",
           "check_text"]

Context = Literal["submit", "argument", "dag", "dag-argument", "shell"]

# Everything below space except tab, plus DEL and the Unicode line separators that
# some parsers treat as newlines.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\u0085\u2028\u2029]")
_UNREPRESENTABLE = re.compile(r"\$\$|\$\(dollar\)", re.IGNORECASE)
_NEEDS_SINGLE_QUOTES = re.compile(r"[\s'\"]")
# A text that every layer of DAG quoting leaves as it is (no control character, no '$',
# no quote, no backslash): most VARS values of a big DAG
_PLAIN_FOR_DAG = re.compile(r'[^\x00-\x1f\x7f\u0085\u2028\u2029$"\\]*')


def check_text(value: str, what: str = "value") -> str:
    """Refuse control characters (newline, CR, NUL, ...) in ``value``; return it."""
    match = _FORBIDDEN.search(value)
    if match:
        raise Invalid(
            f"{what} {value[:60]!r} contains the control character "
            f"U+{ord(match.group()):04X} at position {match.start()}",
            "remove newlines and control characters: they could add submit commands",
        )
    return value


def quote(value: object, context: Context = "submit") -> str:
    """Quote ``value`` for ``context``.

    - ``submit``: the right-hand side of ``key = value`` in a submit file.
    - ``argument``: one item inside an HTCondor ``arguments = "..."`` list.
    - ``dag``: a DAG ``VARS`` value, including its surrounding double quotes.
    - ``dag-argument``: a DAG ``VARS`` value holding one argument, for a submit file that
      writes ``arguments = "... $(var) ..."``.
    - ``shell``: one word for a POSIX shell.

    Raises ``Invalid`` for values that cannot be written safely (control characters).
    """
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        raise Invalid("a null value cannot be written into a workflow file",
                      "give the parameter a value or a default")
    else:
        text = str(value)
    if context == "dag" and _PLAIN_FOR_DAG.fullmatch(text):
        return '"' + text + '"'  # what the checks and quoting below make of it
    check_text(text)
    return _quote_checked(text, context)


def _quote_checked(text: str, context: Context) -> str:
    """``quote`` of a text already checked for control characters (a template quotes
    every item of a big DAG: it is checked once, not once per layer of quoting)."""
    if context == "shell":
        return shlex.quote(text)
    if context in ("dag", "dag-argument"):
        # a VARS value becomes a submit-file macro, so it gets the submit protections too
        inner = _quote_checked(text, "argument" if context == "dag-argument" else "submit")
        return '"' + inner.replace("\\", "\\\\").replace('"', '\\"') + '"'
    bad = _UNREPRESENTABLE.search(text)
    if bad:
        # condor_submit reads "$$(" as a match-time macro even when each "$" is written
        # as $(DOLLAR), and expands $(DOLLAR) until none is left: neither can be passed
        # through a submit file literally
        raise Invalid(f"value {text[:60]!r} contains {bad.group()!r}, which HTCondor "
                      "would expand", "avoid '$$' and '$(DOLLAR)' in values")
    text = text.replace("$", "$(DOLLAR)")
    if context == "submit":
        return text
    if context == "argument":
        escaped = text.replace('"', '""').replace("'", "''")
        if text == "" or _NEEDS_SINGLE_QUOTES.search(text):
            return f"'{escaped}'"
        return escaped
    raise ValueError(f"unknown quoting context {context!r}")


def quote_arguments(values: Iterable[object]) -> str:
    """An HTCondor ``arguments`` value in the new syntax, double quotes included."""
    return '"' + " ".join(quote(v, "argument") for v in values) + '"'


def quote_environment(env: Mapping[str, object]) -> str:
    """An HTCondor ``environment`` value in the new syntax, double quotes included."""
    items = []
    for key, val in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise Invalid(f"environment variable name {key!r} is not valid",
                          "use letters, digits and underscores")
        items.append(quote(f"{key}={'' if val is None else val}", "argument"))
    return '"' + " ".join(items) + '"'


def split_arguments(text: str) -> list[str]:
    """Read an HTCondor arguments/environment value back into a list of strings.

    Handles the new syntax (``"a 'b c' d""e"``) and the old one (plain
    whitespace-separated words). ``$(DOLLAR)`` must already be expanded.
    """
    text = text.strip()
    if not (text.startswith('"') and text.endswith('"') and len(text) >= 2):
        return text.split()
    body = text[1:-1]
    args: list[str] = []
    current: list[str] = []
    in_word = False
    in_single = False
    i = 0
    while i < len(body):
        ch = body[i]
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if ch == '"' and nxt == '"':
            current.append('"')
            in_word = True
            i += 2
            continue
        if ch == '"':
            raise Invalid(f"unescaped double quote in arguments {text!r}",
                          "double it (\"\") inside the quoted list")
        if in_single:
            if ch == "'" and nxt == "'":
                current.append("'")
                i += 2
                continue
            if ch == "'":
                in_single = False
                i += 1
                continue
            current.append(ch)
            i += 1
            continue
        if ch == "'":
            if nxt == "'" and not in_word and (i + 2 >= len(body) or body[i + 2].isspace()):
                # '' on its own is an empty argument
                args.append("")
                i += 2
                continue
            in_single = True
            in_word = True
            i += 1
            continue
        if ch.isspace():
            if in_word:
                args.append("".join(current))
                current = []
                in_word = False
            i += 1
            continue
        current.append(ch)
        in_word = True
        i += 1
    if in_single:
        raise Invalid(f"unterminated single quote in arguments {text!r}",
                      "close the quoted argument")
    if in_word:
        args.append("".join(current))
    return args
