"""Templates' sandbox: its short way to ``loop.x`` and ``parameters.x`` answers as Jinja2's
immutable sandbox does, and refuses what it refuses."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from docket.render import template_environment

CONTEXT = {"parameters": {"name": "m51", "targets": ["a", "b", "c"], "items": "a key",
                          "_hidden": "an underscore key", "nested": {"depth": 2}}}


def _sandbox() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


@pytest.mark.parametrize("source", [
    "{{ parameters.name }} {{ parameters.nested.depth }}",
    "{% for t in parameters.targets %}{{ loop.index0 }}{{ loop.index }}{{ loop.first }}"
    "{{ loop.last }}{{ loop.length }}{{ loop.revindex }}{{ loop.changed(t) }}"
    "{{ loop.cycle('x', 'y') }};{% endfor %}",
    # a key named like a dict method: Jinja2 gives the method, and so do we
    "{{ parameters.items is callable }} {{ parameters['items'] }}",
    "{{ parameters._hidden }}",
    "{{ parameters.missing is defined }} {{ parameters.get('name') }}",
])
def test_lookups_answer_as_jinjas_sandbox(tmp_path: Path, source: str) -> None:
    ours = template_environment(tmp_path).from_string(source).render(CONTEXT)
    assert ours == _sandbox().from_string(source).render(CONTEXT)


@pytest.mark.parametrize("source", [
    "{{ parameters.update({'name': 'x'}) }}",
    "{% for t in parameters.targets %}{{ loop.__class__.__init__.__globals__ }}{% endfor %}",
])
def test_what_the_sandbox_refuses_stays_refused(tmp_path: Path, source: str) -> None:
    with pytest.raises(SecurityError):
        template_environment(tmp_path).from_string(source).render(CONTEXT)
    with pytest.raises(SecurityError):
        _sandbox().from_string(source).render(CONTEXT)


def test_a_missing_parameter_is_still_an_error(tmp_path: Path) -> None:
    with pytest.raises(jinja2.UndefinedError, match="missing"):
        template_environment(tmp_path).from_string("{{ parameters.missing }}").render(CONTEXT)
