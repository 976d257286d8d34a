"""check_dag, the check of a rendered DAG, agrees with parse_dag on every DAG.

check_dag reads a plain DAG (the shape templates render) in a few passes over the
whole text and hands anything else to the parser; either way it must accept exactly
what parse_dag accepts and refuse with parse_dag's message."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from docket.dag import DagError, _plain_summary, check_dag, parse_dag


def _outcome(check, text: str, path: Path) -> tuple:  # noqa: ANN001
    try:
        result = check(text, path)
    except DagError as exc:
        return ("refused", str(exc))
    if check is parse_dag:
        return ("accepted", len(result.nodes), frozenset(
            (n.directory, n.submit_file) for n in result.nodes.values()
            if not n.noop and n.inline_submit is None and n.subdag is None))
    return ("accepted", result.nodes, result.submit_files)


def _agree(text: str, path: Path) -> tuple:
    expected = _outcome(parse_dag, text, path)
    assert _outcome(check_dag, text, path) == expected, text
    return expected


FANOUT = ("# fan-out\nJOB fetch fetch.sub\n"
          + "".join(f'JOB p{i} process.sub\nVARS p{i} item="f-{i}" code="0"\n'
                    for i in range(50))
          + "JOB deliver deliver.sub\nRETRY fetch 2\n"
          + "PARENT fetch CHILD " + " ".join(f"p{i}" for i in range(50)) + "\n"
          + "PARENT " + " ".join(f"p{i}" for i in range(50)) + " CHILD deliver\n")

PLAIN = [
    FANOUT,
    'JOB A a.sub\t\nVARS A\tx="say \\"hi\\" \\\\ bye"  y=""\n\n   # note\nJOB B b.sub\n'
    "PARENT A CHILD B\n",
    'JOB A a.sub\nVARS A APPEND="1"\nVARS A x="queue is a value"\n',  # no mode, no queue name
    "JOB A a.sub",  # no final newline
]


@pytest.mark.parametrize("text", PLAIN)
def test_a_plain_dag_is_checked_in_bulk_and_agrees_with_the_parser(tmp_path, text):
    assert _plain_summary(text) is not None  # the bulk check is what is compared here
    assert _agree(text, tmp_path / "w.dag")[0] == "accepted"


NOT_PLAIN = [
    # refused by the parser: each must come back with its message
    "JOB A a.sub\nJOB A b.sub\n",
    "JOB A a.sub\nJOB final b.sub\n",
    "JOB A a.sub\nJOB x+y b.sub\n",
    'JOB A a.sub\nVARS B x="1"\n',
    'JOB A a.sub\nVARS A QUEUE_x="1"\n',
    'JOB A a.sub\nVARS A x="1"y="2"\nVARS A x = "1"\n',
    "JOB A a.sub\nRETRY B 2\n",
    "JOB A a.sub\nJOB B b.sub\nPARENT A CHILD B\nPARENT B CHILD A\n",
    "JOB A a.sub\nPARENT A CHILD A\n",
    "JOB A a.sub\nPARENT A child\n",
    "JOB A a.sub\nPARENT A CHILD ghost\n",
    "# only a comment\n",
    # accepted by the parser, not plain (or not provably fine in bulk)
    "JOB A a.sub\nJOB B b.sub\nPARENT B CHILD A\n",  # a child written before its parent
    "JOB A a.sub\nJOB B b.sub\nparent A child B\n",
    "job A a.sub\n",
    'JOB A a.sub\nVARS A APPEND x="1"\n',
    'JOB A a.sub\nVARS A x="a queue=" y="2"\n',
    "JOB A a.sub DIR sub\nJOB B b.sub NOOP\n",
    "JOB A a.sub\n# a comment that goes on \\\nJOB A b.sub\n",  # continued: no second JOB
    "JOB A a.sub\rJOB B b.sub\n",
    "JOB A {\nexecutable = /bin/true\nqueue\n}\n",
    "JOB A a.sub\nRETRY A +2\n",
    "JOB A a.sub\nVARS ALL_NODES x=\"1\"\n",
    "JOB A a.sub\nPRIORITY A 5\n",
]


@pytest.mark.parametrize("text", NOT_PLAIN)
def test_anything_else_gets_the_parsers_answer(tmp_path, text):
    assert _plain_summary(text) is None
    _agree(text, tmp_path / "w.dag")


# mostly good names, so that many DAGs are plain and fine and both ways are compared
NAMES = st.sampled_from(["A", "B", "C", "D"] * 6 + ["c_1", "final", "FINAL", "x+y",
                                                    "ALL_NODES", "queue", "child", "Ünï"])
WORDS = st.sampled_from([" ", "\t", "  "])
VALUES = st.text(st.sampled_from(list("ab    =$#{}") + ['"', "\\"]), max_size=6)


@st.composite
def _line(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["JOB"] * 6 + ["VARS"] * 3 + ["PARENT"] * 3 + [
        "job", "RETRY", "#", "", "PRIORITY"]))
    gap = draw(WORDS)
    name = draw(NAMES)
    if kind in ("JOB", "job"):
        submit = draw(st.sampled_from(["a.sub"] * 4 + ["b.sub", "{", "c.sub NOOP"]))
        return f"{kind}{gap}{name}{gap}{submit}"
    if kind == "VARS":
        pairs = draw(st.lists(st.tuples(st.sampled_from(["x", "y", "queueX", "APPEND"]),
                                        VALUES), min_size=0, max_size=3))
        body = "".join(f'{gap}{key}="{value}"' for key, value in pairs)
        return f"VARS{gap}{name}{draw(st.sampled_from([''] * 4 + [' APPEND']))}{body}"
    if kind == "RETRY":
        return f"RETRY{gap}{name}{gap}{draw(st.sampled_from(['2', 'x', '+1']))}"
    if kind == "PARENT":
        left = " ".join(draw(st.lists(NAMES, min_size=0, max_size=2)))
        right = " ".join(draw(st.lists(NAMES, min_size=0, max_size=2)))
        return f"PARENT {left} CHILD {right}"
    if kind == "#":
        return "# note" + draw(st.sampled_from(["", " \\"]))
    return kind if kind != "PRIORITY" else f"PRIORITY {name} 1"


@st.composite
def _dag(draw: st.DrawFn) -> str:
    """JOB lines for a few distinct nodes, then any mix of lines (often about them)."""
    names = draw(st.lists(st.sampled_from(["A", "B", "C", "D", "E"]), unique=True,
                          min_size=1, max_size=5))
    lines = [f"JOB {name} a.sub" for name in names]
    lines += draw(st.lists(_line(), max_size=6))
    newline = draw(st.sampled_from(["\n"] * 5 + ["\r\n"]))
    return newline.join(lines) + draw(st.sampled_from(["", newline]))


@settings(max_examples=500, deadline=None)
@given(_dag())
def test_check_dag_agrees_with_parse_dag_on_any_mix_of_lines(text):
    _agree(text, Path("/nonexistent/w.dag"))
