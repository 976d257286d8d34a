"""The one quoting function: nothing a parameter holds can add a submit or DAG command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from docket.dag import parse_dag
from docket.errors import Invalid
from docket.quoting import check_text, quote, quote_arguments, quote_environment, split_arguments

os.environ.setdefault("CONDOR_CONFIG", "/dev/null")
import htcondor2  # noqa: E402

HOSTILE = ["plain", "two words", "it's", 'say "hi"', "$(HOME)", "$ $", "$(DOLLAR", "a,b", "=",
           "queue 100", "'", '"', "''", "", " lead", "trail ", "tab\tin", "ünïcødé ✓",
           "back\\slash", "--flag=x y"]


@pytest.mark.parametrize("value", HOSTILE)
def test_arguments_round_trip_through_htcondor(value):
    line = quote_arguments(["first", value, "last"])
    description = htcondor2.Submit(f"executable = /bin/echo\narguments = {line}\nqueue\n")
    expanded = description.expand("arguments")
    assert split_arguments(expanded) == ["first", value, "last"]


@pytest.mark.parametrize("value", ["line\nqueue 1000", "cr\rhold = true", "nul\x00",
                                   "esc\x1b[2J", "del\x7f", "sep\u2028x"])
def test_control_characters_are_refused_everywhere(value):
    for context in ("submit", "argument", "dag", "shell"):
        with pytest.raises(Invalid, match="contains the control character"):
            quote(value, context)  # type: ignore[arg-type]
    with pytest.raises(Invalid):
        quote_arguments([value])
    with pytest.raises(Invalid):
        quote_environment({"X": value})


def test_a_submit_value_never_expands_a_macro():
    value = quote("$(Cluster)/$ENV(HOME)", "submit")
    description = htcondor2.Submit(f"executable = /bin/true\nmy_dir = {value}\nqueue\n")
    assert description.expand("my_dir") == "$(Cluster)/$ENV(HOME)"


def test_two_dollars_in_a_row_are_refused_in_submit_files():
    for context in ("submit", "argument"):
        with pytest.raises(Invalid, match="contains '\\$\\$', which HTCondor would"):
            quote("cost $$(Cpus)", context)  # type: ignore[arg-type]
        with pytest.raises(Invalid, match="contains '\\$\\(Dollar\\)'"):
            quote("$(Dollar)", context)  # type: ignore[arg-type]
    assert quote("$$", "shell") == "'$$'"


def test_dag_vars_values_escape_quotes_and_backslashes():
    assert quote('say "hi" \\ bye', "dag") == '"say \\"hi\\" \\\\ bye"'


def test_environment_names_are_checked():
    assert quote_environment({"A": "1", "B": "x y"}) == "\"A=1 'B=x y'\""
    with pytest.raises(Invalid, match="environment variable name 'BAD NAME'"):
        quote_environment({"BAD NAME": "1"})


def test_check_text_allows_tabs_and_unicode():
    assert check_text("a\tb ✓") == "a\tb ✓"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
                        max_size=20).filter(
                            lambda t: "$$" not in t and "$(dollar)" not in t.lower()), max_size=6))
def test_any_printable_argument_list_survives_submit(values):
    line = quote_arguments(values)
    text = f"executable = /bin/echo\narguments = {line}\nqueue\n"
    description = htcondor2.Submit(text)
    assert description.getQArgs() == ""  # nothing became a second queue statement
    assert sorted(k.lower() for k in description) == ["arguments", "executable"]
    assert split_arguments(description.expand("arguments")) == values


@settings(max_examples=300, deadline=None)
@given(st.text(st.one_of(st.sampled_from(list("ab-_./:=$'\"\\ \té✓")), st.characters()),
               max_size=12))
def test_a_dag_value_reads_back_through_the_dag_parser_as_its_submit_value(value):
    # plain values and values that need every layer of quoting alike
    try:
        expected = quote(value, "submit")
    except Invalid:
        with pytest.raises(Invalid):
            quote(value, "dag")
        return
    dag = parse_dag(f"JOB A a.sub\nVARS A x={quote(value, 'dag')}\n", Path("w.dag"))
    assert dag.nodes["A"].vars == {"x": expected}
