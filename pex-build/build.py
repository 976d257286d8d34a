"""Build every docket tool into its own PEX file: ``make pex`` -> ``dist/<tool>.pex``.

Usage::

    python pex-build/build.py [TOOL ...] [--out DIR] [--force] [--show]
    python pex-build/build.py --lock        # re-pin pex-build/pex.lock (needs PyPI)

Each tool's recipe is in ``tools.toml``. The modules a PEX carries are the import
closure of the tool's console-script module (``[project.scripts]`` in pyproject.toml),
found by reading import statements with ``ast`` (module level and inside functions) and
kept within the repository's own packages; the third-party imports met on the way are
pinned from ``pex.lock`` and pex adds their dependencies from the same lock. Sources are
staged into a temporary directory and pex builds from there, so nothing else in the
tree can leak in. A build writes ``<tool>.pex`` and ``<tool>.pex.json`` (what went in,
and the key that says whether the PEX is up to date); an up-to-date PEX is not rebuilt.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from docket.errors import DocketError, ExternalFailure, Invalid, NotFound, UsageError
from docket.fileio import atomic_write, sha256_file

__all__ = [
    "REPO",
    "DIST",
    "Recipe",
    "Closure",
    "Built",
    "load_recipes",
    "find_closure",
    "requirements_for",
    "build",
    "build_one",
    "write_lock",
    "main",
]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DIST = REPO / "dist"
RECIPES = HERE / "tools.toml"
# pex's download and install cache for builds; kept out of the PEX_ROOT that the
# built tools use at run time
BUILD_CACHE = REPO / "build" / "pex-root"
REQUIREMENTS_LOCK = HERE / "requirements.lock"

Log = Callable[[str], None]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def repo_packages() -> frozenset[str]:
    """The repository's top-level packages (pyproject's setuptools ``include``)."""
    include = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    return frozenset(p.rstrip("*").rstrip(".") for p in include)


@dataclass(frozen=True)
class Recipe:
    """What one tool's PEX is built from."""

    name: str
    entry: str  # "module:function"
    extra: tuple[str, ...] = ()
    provided: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()  # distributions left out of the resolve

    @property
    def entry_module(self) -> str:
        return self.entry.partition(":")[0]


@dataclass(frozen=True)
class Settings:
    interpreter_constraint: str
    pip_version: str
    lock: Path
    exclude: tuple[str, ...] = ()  # left out of every tool (each tool may add its own)
    env: tuple[tuple[str, str], ...] = ()  # frozen into every PEX (pex --inject-env)


def _settings(data: dict) -> Settings:
    pex = data.get("pex", {})
    try:
        return Settings(interpreter_constraint=str(pex["interpreter_constraint"]),
                        pip_version=str(pex["pip_version"]), lock=HERE / str(pex["lock"]),
                        exclude=tuple(pex.get("exclude", ())),
                        env=tuple((str(k), str(v)) for k, v in pex.get("env", {}).items()))
    except KeyError as exc:
        raise Invalid(f"{RECIPES}: [pex] has no {exc.args[0]!r}",
                      "add it (see the comments at the top of the file)") from None


def load_recipes(path: Path = RECIPES) -> tuple[dict[str, Recipe], Settings]:
    """Every tool's recipe, entry points taken from pyproject's [project.scripts]."""
    data = tomllib.loads(path.read_text())
    scripts = _pyproject()["project"]["scripts"]
    settings = _settings(data)
    recipes: dict[str, Recipe] = {}
    for name, table in data.get("tool", {}).items():
        unknown = set(table) - {"entry", "extra", "provided", "exclude"}
        if unknown:
            raise Invalid(f"{path}: [tool.{name}] has unknown keys {sorted(unknown)}",
                          "use only entry, extra, provided and exclude")
        entry = table.get("entry") or scripts.get(name)
        if not entry:
            raise Invalid(f"{path}: tool {name!r} has no console script in pyproject.toml",
                          "add it to [project.scripts] or give an entry = \"module:func\"")
        recipes[name] = Recipe(name=name, entry=str(entry),
                               extra=tuple(table.get("extra", ())),
                               provided=tuple(table.get("provided", ())),
                               exclude=settings.exclude + tuple(table.get("exclude", ())))
    return recipes, settings


# -- the import closure -------------------------------------------------------------


def module_file(name: str, root: Path = REPO) -> Path | None:
    """The file that defines module ``name`` in the repository, if any."""
    base = root.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except under ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_names(path: Path, module: str) -> list[str]:
    """Absolute dotted names that ``module`` (defined in ``path``) may import.

    ``from a import b`` yields both ``a`` and ``a.b``: ``b`` may be a submodule or an
    attribute, and the caller keeps whichever exists.
    """
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: list[str] = []
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
            continue
        if node.level:
            parts = package.split(".")
            if node.level - 1 > len(parts) - 1:
                raise Invalid(f"{path}:{node.lineno}: relative import beyond the top package",
                              "use an absolute import")
            base = ".".join(parts[:len(parts) - (node.level - 1)])
            source = f"{base}.{node.module}" if node.module else base
        else:
            source = node.module or ""
        names.append(source)
        names.extend(f"{source}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


@dataclass
class Closure:
    """What a tool needs: repository modules (name -> file) and third-party imports."""

    modules: dict[str, Path] = field(default_factory=dict)
    third_party: set[str] = field(default_factory=set)  # top-level import names


def find_closure(recipe: Recipe, root: Path = REPO) -> Closure:
    """Follow imports from the entry module and ``extra`` within the repo's packages."""
    ours = repo_packages()
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    closure = Closure()
    todo = [recipe.entry_module, *recipe.extra]
    importer: dict[str, str] = {}
    while todo:
        name = todo.pop()
        if name in closure.modules:
            continue
        path = module_file(name, root)
        if path is None:
            where = f" (imported by {importer[name]})" if name in importer else ""
            raise NotFound(f"tool {recipe.name}: module {name}{where} is not in the repository",
                           "fix the import or pex-build/tools.toml")
        closure.modules[name] = path
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
        for imported in imported_names(path, name):
            top = imported.partition(".")[0]
            if top in ours:
                if module_file(imported, root) is not None:
                    importer.setdefault(imported, name)
                    todo.append(imported)
                elif "." in imported:
                    # ``from pkg import attribute``: the parent must be a module
                    parent = imported.rpartition(".")[0]
                    importer.setdefault(parent, name)
                    todo.append(parent)
                else:
                    importer.setdefault(imported, name)
                    todo.append(imported)
            elif top not in stdlib and top not in recipe.provided:
                closure.third_party.add(top)
    return closure


# -- third-party requirements ---------------------------------------------------------


def _normalise(project: str) -> str:
    return re.sub(r"[-_.]+", "-", project).lower()


def locked_versions(lock: Path) -> dict[str, str]:
    """Project name (normalised) -> version pinned in a pex lock file."""
    if not lock.is_file():
        raise NotFound(f"no lock file {lock}", "run: python pex-build/build.py --lock")
    data = json.loads(lock.read_text())
    return {_normalise(r["project_name"]): r["version"]
            for resolve in data["locked_resolves"] for r in resolve["locked_requirements"]}


def requirements_for(closure: Closure, lock: Path, tool: str = "") -> list[str]:
    """``project==version`` for every distribution that provides a third-party import."""
    providers = importlib.metadata.packages_distributions()
    pinned = locked_versions(lock)
    requirements = set()
    for top in sorted(closure.third_party):
        dists = providers.get(top)
        if not dists:
            raise NotFound(f"tool {tool}: no installed distribution provides the import {top!r}",
                           "install it in the venv and add it to pyproject's dependencies")
        for dist in dists:
            version = pinned.get(_normalise(dist))
            if version is None:
                raise NotFound(f"tool {tool}: {dist} (import {top!r}) is not in {lock.name}",
                               "run: python pex-build/build.py --lock")
            requirements.add(f"{_normalise(dist)}=={version}")
    return sorted(requirements)


# -- building -------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    """One tool's PEX file and what went into it."""

    name: str
    path: Path
    sha256: str
    modules: tuple[str, ...]
    requirements: tuple[str, ...]
    seconds: float
    rebuilt: bool


def _pex_version() -> str:
    return importlib.metadata.version("pex")


def pex_options(recipe: Recipe, settings: Settings) -> list[str]:
    """The pex flags a tool is built with (besides paths and requirements)."""
    excluded = [arg for project in recipe.exclude for arg in ("--exclude", project)]
    injected = [arg for key, value in settings.env for arg in ("--inject-env", f"{key}={value}")]
    return [*excluded, *injected,
        "--entry-point", recipe.entry,
        # venv mode: the first run installs a venv in PEX_ROOT; later runs exec its
        # python directly, which is what makes warm start-up close to a venv's
        "--venv",
        # a /bin/sh preamble finds that venv without starting python first
        "--sh-boot",
        "--interpreter-constraint", settings.interpreter_constraint,
        "--pip-version", settings.pip_version,
        # .pyc files are written into the installed venv on first use instead: the
        # PEX file itself stays byte-for-byte reproducible
        "--no-compile",
        # a PEX must not pick up anything from the node's own site-packages
        "--no-venv-system-site-packages",
    ]


def _key(recipe: Recipe, settings: Settings, closure: Closure, requirements: list[str]) -> str:
    digest = hashlib.sha256()
    for part in [_pex_version(), sha256_file(settings.lock), sha256_file(Path(__file__)),
                 *pex_options(recipe, settings), *requirements]:
        digest.update(part.encode() + b"\0")
    for name in sorted(closure.modules):
        path = closure.modules[name]
        digest.update(f"{path.relative_to(REPO)}\0{sha256_file(path)}\0".encode())
    return digest.hexdigest()


def stage(closure: Closure, dest: Path, root: Path = REPO) -> None:
    """Copy the closure's files into ``dest``, keeping their paths in the repository."""
    for path in closure.modules.values():
        target = dest / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def _manifest_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def build_one(recipe: Recipe, settings: Settings, out_dir: Path = DIST, *,
              force: bool = False, cache: Path = BUILD_CACHE, log: Log = print) -> Built:
    """Build ``out_dir/<tool>.pex`` unless an up-to-date one is there already."""
    started = time.monotonic()
    closure = find_closure(recipe)
    requirements = requirements_for(closure, settings.lock, recipe.name)
    key = _key(recipe, settings, closure, requirements)
    out = out_dir / f"{recipe.name}.pex"
    manifest = _manifest_path(out)
    modules = tuple(sorted(closure.modules))
    if not force and out.is_file() and manifest.is_file():
        try:
            recorded = json.loads(manifest.read_text())
        except ValueError:
            recorded = {}
        if recorded.get("key") == key and recorded.get("sha256") == sha256_file(out):
            return Built(recipe.name, out, recorded["sha256"], modules, tuple(requirements),
                         time.monotonic() - started, rebuilt=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"docket-pex-{recipe.name}-") as tmp:
        sources = Path(tmp) / "src"
        stage(closure, sources)
        built = Path(tmp) / out.name
        # --lock with no requirement would install everything the lock pins: a tool that
        # imports no third-party package (task-worker) gets none
        locked = ["--lock", str(settings.lock), *requirements] if requirements else []
        command = [sys.executable, "-m", "pex", "--pex-root", str(cache),
                   "--python", sys.executable, *locked,
                   "--sources-directory", str(sources), *pex_options(recipe, settings),
                   "--output-file", str(built)]
        # pex must not see the caller's PEX_* settings (PEX_ROOT of a test, for one)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEX_")}
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
            raise ExternalFailure(f"pex failed for {recipe.name} (exit {done.returncode}):\n"
                                  + "\n".join(tail),
                                  "read the pex output above; run `python pex-build/build.py "
                                  f"{recipe.name}` to retry")
        digest = sha256_file(built)
        os.replace(built, out)
    atomic_write(manifest, json.dumps({
        "tool": recipe.name, "entry": recipe.entry, "key": key, "sha256": digest,
        "pex": _pex_version(), "interpreter_constraint": settings.interpreter_constraint,
        "modules": list(modules), "requirements": requirements,
        "provided": list(recipe.provided), "excluded": list(recipe.exclude),
    }, indent=2) + "\n", durable=False)
    seconds = time.monotonic() - started
    log(f"built {out} in {seconds:.1f} s ({len(modules)} modules, "
        f"{len(requirements)} requirements, {out.stat().st_size / 1e6:.1f} MB)")
    return Built(recipe.name, out, digest, modules, tuple(requirements), seconds, rebuilt=True)


def check_build_python() -> None:
    """pex resolves the lock for the interpreter that builds: it must be the nodes' kind."""
    found = (sys.implementation.name, sys.version_info[:2], sys.platform, platform.machine())
    if found != ("cpython", (3, 11), "linux", "x86_64"):
        raise UsageError(f"PEX files are built for CPython 3.11 on Linux x86_64, not {found}",
                         "run `make pex` (the venv's python) on a Linux x86_64 machine")


def build(tools: Sequence[str] | None = None, out_dir: Path = DIST, *, force: bool = False,
          cache: Path = BUILD_CACHE, log: Log = print) -> list[Built]:
    """Build the named tools (default: every tool in tools.toml) into ``out_dir``."""
    check_build_python()
    recipes, settings = load_recipes()
    names = list(tools) if tools else list(recipes)
    unknown = [n for n in names if n not in recipes]
    if unknown:
        raise UsageError(f"unknown tool(s) {', '.join(unknown)}",
                         f"choose from {', '.join(recipes)}")
    return [build_one(recipes[n], settings, out_dir, force=force, cache=cache, log=log)
            for n in names]


# -- the lock -------------------------------------------------------------------------


def _frozen_versions() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS_LOCK.read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            pins[_normalise(name)] = version
    return pins


def write_lock(cache: Path = BUILD_CACHE, log: Log = print) -> Path:
    """Re-pin pex.lock: pyproject's dependencies and every tool's third-party imports.

    Versions come from requirements.lock (the dev venv's ``pip freeze``), so the PEX
    files run the same versions the tests run; the lock adds hashes for every artifact.
    """
    recipes, settings = load_recipes()
    frozen = _frozen_versions()
    projects = {_normalise(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0])
                for d in _pyproject()["project"]["dependencies"]}
    providers = importlib.metadata.packages_distributions()
    for recipe in recipes.values():
        for top in find_closure(recipe).third_party:
            projects.update(_normalise(d) for d in providers.get(top, ()))
    missing = sorted(p for p in projects if p not in frozen)
    if missing:
        raise NotFound(f"{', '.join(missing)} not pinned in {REQUIREMENTS_LOCK.name}",
                       "run `make lock` first")
    with tempfile.TemporaryDirectory(prefix="docket-pex-lock-") as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text("".join(f"{p}=={frozen[p]}\n" for p in sorted(projects)))
        command = [sys.executable, "-m", "pex.cli", "lock", "create", "--pex-root", str(cache),
                   "--style", "universal", "--target-system", "linux",
                   "--interpreter-constraint", settings.interpreter_constraint,
                   "--pip-version", settings.pip_version,
                   "--constraints", str(REQUIREMENTS_LOCK), "-r", str(requirements),
                   "--indent", "1", "-o", str(Path(tmp) / "pex.lock")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEX_")}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise ExternalFailure("pex3 lock create failed:\n" + done.stderr.strip()[-2000:],
                                  "check that PyPI is reachable")
        text = (Path(tmp) / "pex.lock").read_text()
    atomic_write(settings.lock, text, durable=False)
    log(f"wrote {settings.lock} ({len(projects)} requirements)")
    return settings.lock


# -- command line ---------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pex-build/build.py",
                                     description="Build each docket tool into dist/<tool>.pex.")
    parser.add_argument("tools", nargs="*", metavar="TOOL", help="tools to build (default: all)")
    parser.add_argument("--out", type=Path, default=DIST, help="output directory (dist/)")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument("--show", action="store_true",
                        help="print each tool's modules and requirements; build nothing")
    parser.add_argument("--lock", action="store_true",
                        help="re-pin pex-build/pex.lock from requirements.lock (needs PyPI)")
    args = parser.parse_args(argv)
    try:
        if args.lock:
            write_lock()
            return 0
        if args.show:
            recipes, settings = load_recipes()
            for name in args.tools or recipes:
                closure = find_closure(recipes[name])
                print(f"{name}: {recipes[name].entry}")
                print("  modules: " + " ".join(sorted(closure.modules)))
                print("  requirements: "
                      + " ".join(requirements_for(closure, settings.lock, name)))
            return 0
        started = time.monotonic()
        results = build(args.tools, args.out, force=args.force)
        rebuilt = sum(b.rebuilt for b in results)
        print(f"{rebuilt} built, {len(results) - rebuilt} up to date, in "
              f"{time.monotonic() - started:.1f} s: {args.out}")
        return 0
    except DocketError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return int(exc.exit_code)


if __name__ == "__main__":
    raise SystemExit(main())
