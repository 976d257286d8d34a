"""Compiled templates kept in the home's state directory: the next tick uses them, an
edited template is compiled again, the sandbox still checks, and a damaged or unwritable
cache only costs a compile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from docket.render import bytecode_cache_dir, template_environment
from tests.conftest import drop, request_doc

CONTEXT = {"parameters": {"name": "m51", "targets": ["a", "b"]}}
SOURCE = "{% for t in parameters.targets %}{{ parameters.name }}-{{ t }};{% endfor %}\n"


def _counting(env: ImmutableSandboxedEnvironment) -> list[str]:
    """The names ``env`` compiles from source from now on."""
    compiled: list[str] = []
    compile_source = env.compile

    def compile_and_count(source: str, name: Any = None, *args: Any, **kwargs: Any) -> Any:
        compiled.append(name)
        return compile_source(source, name, *args, **kwargs)

    env.compile = compile_and_count  # type: ignore[method-assign]
    return compiled


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "job.sub.j2").write_text(SOURCE)
    return templates


def test_the_next_process_renders_from_the_cache_and_edits_take_effect(
        tmp_path: Path, folder: Path) -> None:
    cache = bytecode_cache_dir(tmp_path / "state")
    first = template_environment(folder, cache)
    assert first.get_template("job.sub.j2").render(CONTEXT) == "m51-a;m51-b;\n"
    assert list(cache.iterdir()), "the compiled template was not kept"

    second = template_environment(folder, cache)  # as the next tick builds it
    compiled = _counting(second)
    assert second.get_template("job.sub.j2").render(CONTEXT) == "m51-a;m51-b;\n"
    assert compiled == []

    (folder / "job.sub.j2").write_text("edited {{ parameters.name }}\n")
    third = template_environment(folder, cache)
    compiled = _counting(third)
    assert third.get_template("job.sub.j2").render(CONTEXT) == "edited m51\n"
    assert compiled == ["job.sub.j2"]


def test_cached_code_is_still_sandboxed(tmp_path: Path, folder: Path) -> None:
    (folder / "bad.j2").write_text("{{ parameters.update({'name': 'x'}) }}")
    cache = bytecode_cache_dir(tmp_path / "state")
    for _ in range(2):  # compiled, then from the cache
        with pytest.raises(SecurityError):
            template_environment(folder, cache).get_template("bad.j2").render(CONTEXT)
    assert list(cache.iterdir())


@pytest.mark.parametrize("damage", [b"", b"garbage", None])
def test_a_damaged_cache_file_is_compiled_again(tmp_path: Path, folder: Path,
                                                damage: bytes | None) -> None:
    cache = bytecode_cache_dir(tmp_path / "state")
    template_environment(folder, cache).get_template("job.sub.j2")
    (entry,) = cache.iterdir()
    data = entry.read_bytes()
    entry.write_bytes(data[:len(data) // 2] if damage is None else damage)  # None: cut short
    env = template_environment(folder, cache)
    compiled = _counting(env)
    assert env.get_template("job.sub.j2").render(CONTEXT) == "m51-a;m51-b;\n"
    assert compiled == ["job.sub.j2"]
    assert template_environment(folder, cache).get_template("job.sub.j2").render(
        CONTEXT) == "m51-a;m51-b;\n"  # and the file was written again, whole


def test_a_cache_that_cannot_be_made_or_written_still_renders(tmp_path: Path,
                                                             folder: Path) -> None:
    blocked = tmp_path / "state"
    blocked.write_text("a file where the state directory should be\n")
    env = template_environment(folder, bytecode_cache_dir(blocked))
    assert env.get_template("job.sub.j2").render(CONTEXT) == "m51-a;m51-b;\n"

    cache = bytecode_cache_dir(tmp_path / "gone")
    env = template_environment(folder, cache)
    cache.rmdir()  # removed under a running tick: the compiled code cannot be kept
    assert env.get_template("job.sub.j2").render(CONTEXT) == "m51-a;m51-b;\n"
    assert not cache.exists()


def test_a_tick_keeps_the_templates_it_compiled_in_the_homes_state(home: Path,
                                                                   docket: Any) -> None:
    drop(home, "r1.yaml", request_doc("cached-1"))
    assert docket("tick", "--wait").code == 0
    assert docket("show", "cached-1", "--json").json()["request"]["state"] == "complete"
    kept = list(bytecode_cache_dir(home / "state").iterdir())
    assert kept and all(p.stat().st_size > 0 for p in kept)
