"""Every tool's PEX file, copied alone into an empty directory and run the way a cluster
node runs it: ``env -i PATH=/usr/bin:/bin python3 TOOL.pex ...`` (Debian's python3, none of
the venv), ``--help`` and one real operation each."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.pex

REPO = Path(__file__).resolve().parents[2]
BARE_PATH = "PATH=/usr/bin:/bin"

Bare = Callable[..., subprocess.CompletedProcess[str]]
ToolPex = Callable[[str], Path]

TOOLS = ["docket", "productfetcher", "deliver", "ingest", "conveyor", "annihilator", "null",
         "vela", "casa-envoy", "ingest-envoy", "task-worker"]
OUR_PACKAGES = ("cli", "docket", "envoys", "schemas")
# third-party packages that only the docket engine itself may carry
ENGINE_ONLY = ("sqlite_utils", "jinja2", "htcondor2", "watchfiles")

# Run inside a PEX (PEX_INTERPRETER=1): every import statement of every one of our modules
# the PEX carries, at any depth (lazy imports in functions too), must resolve there, except
# the names given in argv[1] (imports that CASA's own python satisfies).
IMPORT_CHECK = r'''
import ast, importlib, importlib.util, json, pathlib, sys

provided = set(json.loads(sys.argv[1]))
problems, modules = [], []

def type_checking(test):
    return getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING"

def imports(tree):
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))

def resolves(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False

for top in OUR_PACKAGES:
    if not resolves(top):
        continue
    root = pathlib.Path(importlib.util.find_spec(top).origin).parent
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        modules.append(module)
        for node in imports(ast.parse(path.read_bytes())):
            if isinstance(node, ast.Import):
                wanted = [(alias.name, None) for alias in node.names]
            else:
                base = package.split(".")
                source = (".".join(base[:len(base) - node.level + 1]) + (
                    "." + node.module if node.module else "")) if node.level else node.module
                wanted = [(source, alias.name) for alias in node.names]
            for source, name in wanted:
                if source.partition(".")[0] in provided or source == "__future__":
                    continue
                where = f"{module}:{node.lineno}"
                if not resolves(source):
                    problems.append(f"{where}: no module {source}")
                elif name and name != "*" and not resolves(f"{source}.{name}"):
                    try:
                        if not hasattr(importlib.import_module(source), name):
                            problems.append(f"{where}: {source} has no {name}")
                    except Exception as exc:
                        problems.append(f"{where}: importing {source} fails: {exc!r}")
print(json.dumps({"modules": modules, "problems": sorted(set(problems))}))
'''.replace("OUR_PACKAGES", repr(OUR_PACKAGES))


def import_check(bare: Bare, pex: Path, cwd: Path, provided: list[str],
                 root: Path | None = None) -> dict:
    proc = bare(pex, "-c", IMPORT_CHECK, json.dumps(provided), cwd=cwd,
                env={"PEX_INTERPRETER": "1"}, root=root)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def manifest(pex: Path) -> dict:
    return json.loads(pex.with_name(pex.name + ".json").read_text())


def members(pex: Path) -> list[str]:
    with zipfile.ZipFile(pex) as archive:
        return archive.namelist()


def ok_json(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["ok"] is True
    return payload


# -- the build --------------------------------------------------------------------------


def test_bare_python3_is_the_systems_311() -> None:
    """The runs below use /usr/bin/python3, not the venv's interpreter."""
    proc = subprocess.run(["/usr/bin/env", "-i", BARE_PATH, "python3", "-c",
                           "import sys; print(sys.version_info[:2], sys.prefix)"],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "(3, 11) /usr"


def test_every_console_script_has_a_recipe(build: ModuleType) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    recipes, _settings = build.load_recipes()
    assert sorted(recipes) == sorted(scripts) == sorted(TOOLS)
    assert {n: r.entry for n, r in recipes.items()} == scripts


def test_each_pex_carries_its_closure_and_nothing_else(pex_files: dict[str, Path]) -> None:
    for name, pex in pex_files.items():
        listed = members(pex)
        ours = sorted(m[:-3].replace("/", ".").removesuffix(".__init__") for m in listed
                      if m.endswith(".py") and m.split("/")[0] in OUR_PACKAGES)
        assert ours == manifest(pex)["modules"], name
        assert not any("casatools" in m or "casatasks" in m for m in listed), name
        assert not any(m.startswith("templates/") for m in listed), name
        if name != "docket":
            assert "docket/store.py" not in listed and "schemas/__init__.py" not in listed, name
            deps = " ".join(m for m in listed if m.startswith(".deps/"))
            assert not [p for p in ENGINE_ONLY if f".deps/{p}" in deps.replace("-", "_")], name
    assert manifest(pex_files["productfetcher"])["modules"] == [
        "cli", "cli.common", "cli.productfetcher", "cli.progress", "cli.toolshell", "docket",
        "docket.errors", "docket.fileio", "docket.locks", "docket.tools", "docket.tools.archive",
        "docket.tools.config", "docket.tools.productfetcher"]
    # load_tool_config imports yaml inside a function: the closure still sees it
    assert any(r.startswith("pyyaml==") for r in manifest(pex_files["productfetcher"])[
        "requirements"])
    assert {"cli.vela", "envoys.casa.casa_script"} <= set(
        manifest(pex_files["casa-envoy"])["modules"])
    assert "docket.engines.localdag" in manifest(pex_files["docket"])["modules"]
    # the processing-directory contract and the lock reach each tool that reads or locks
    for name in ("docket", "conveyor", "deliver", "annihilator", "casa-envoy", "ingest-envoy"):
        assert "docket.procdir" in manifest(pex_files[name])["modules"], name
    for name in ("docket", "conveyor", "null", "ingest", "ingest-envoy"):
        assert "docket.locks" in manifest(pex_files[name])["modules"], name
    # left out on purpose (see pex-build/tools.toml); sqlite_utils still imports
    assert not [m for m in members(pex_files["docket"]) if m.startswith((".deps/pip-",
                                                                        ".deps/tzdata-"))]
    # typer's rich help is left out of every tool, and click (typer carries its own) of
    # every tool but docket (sqlite-utils imports it)
    for name, pex in pex_files.items():
        deps = {m.split("/")[1].split("-")[0] for m in members(pex) if m.startswith(".deps/")}
        assert not deps & {"rich", "pygments", "markdown_it_py", "mdurl"}, name
        assert ("click" in deps) == (name == "docket"), name


def test_a_rebuild_is_byte_for_byte_the_same(build: ModuleType, pex_files: dict[str, Path],
                                            tmp_path: Path) -> None:
    again = build.build(["null", "vela"], tmp_path, force=True, log=lambda _line: None)
    for built in again:
        assert built.rebuilt
        assert built.sha256 == build.sha256_file(pex_files[built.name]), built.name
    # and an up-to-date PEX is left alone
    assert not build.build(["null"], tmp_path, log=lambda _line: None)[0].rebuilt


@pytest.mark.parametrize("name", TOOLS)
def test_every_import_resolves_inside_the_pex(name: str, pex_files: dict[str, Path],
                                              tool_pex: ToolPex, bare: Bare,
                                              tmp_path: Path) -> None:
    recorded = manifest(pex_files[name])
    result = import_check(bare, tool_pex(name), tmp_path, recorded["provided"])
    assert result["problems"] == []
    assert sorted(result["modules"]) == recorded["modules"]


def test_the_import_check_catches_a_missing_module(tool_pex: ToolPex, bare: Bare,
                                                   tmp_path: Path) -> None:
    """The same check on a null.pex without docket/errors.py names what is missing."""
    good = tool_pex("null")
    broken = tmp_path / "broken.pex"
    with zipfile.ZipFile(good) as src:
        # keep the /bin/sh preamble before the archive: pex finds its parts by offset
        preamble = good.read_bytes()[:min(i.header_offset for i in src.infolist())]
        broken.write_bytes(preamble)
        with zipfile.ZipFile(broken, "a") as dst:
            for info in src.infolist():
                if info.filename != "docket/errors.py":
                    dst.writestr(info, src.read(info))
    root = tmp_path / "own-pex-root"  # the broken PEX has the good one's hash
    problems = import_check(bare, broken, tmp_path, [], root=root)["problems"]
    assert any(p.startswith("cli.common:") and p.endswith(": no module docket.errors")
               for p in problems), problems
    proc = bare(broken, "--write", "x.txt", cwd=tmp_path, root=root)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == "ModuleNotFoundError: No module named 'docket.errors'"


# -- --help, bare -----------------------------------------------------------------------


@pytest.mark.parametrize("name", TOOLS)
def test_help_with_a_bare_python3(name: str, tool_pex: ToolPex, bare: Bare,
                                  tmp_path: Path) -> None:
    pex = tool_pex(name)
    work = tmp_path / "empty"
    work.mkdir()
    proc = bare(pex, "--help", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and "--help" in proc.stdout
    assert os.listdir(work) == []


def test_help_when_the_user_asks_typer_for_rich(tool_pex: ToolPex, bare: Bare,
                                                tmp_path: Path) -> None:
    """rich is left out of the PEX files; a shell's own TYPER_USE_RICH=1 must not break
    --help (typer would import rich for it)."""
    proc = bare(tool_pex("docket"), "--help", cwd=tmp_path, env={"TYPER_USE_RICH": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and "rich" not in proc.stderr


def test_runs_as_an_executable_with_the_default_pex_root(tool_pex: ToolPex,
                                                         tmp_path: Path) -> None:
    """``./null.pex`` boots through /bin/sh; without PEX_ROOT it installs under ~/.cache/pex."""
    pex = tool_pex("null")
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.run(["/usr/bin/env", "-i", BARE_PATH, f"HOME={home}", f"./{pex.name}",
                           "--stdout", "hello"], cwd=pex.parent, capture_output=True,
                          text=True, timeout=180, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "hello\n", "")
    assert (home / ".cache" / "pex" / "venvs").is_dir()


# -- one real operation each ------------------------------------------------------------


def test_null_writes_files(tool_pex: ToolPex, bare: Bare, tmp_path: Path) -> None:
    proc = bare(tool_pex("null"), "--write", "out/a.txt", "--write", "b.bin=4096", "--stdout",
                "hello", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "hello\n"), proc.stderr
    assert (tmp_path / "out" / "a.txt").is_file()
    assert (tmp_path / "b.bin").stat().st_size == 4096
    proc = bare(tool_pex("null"), "--exit-code", "5", cwd=tmp_path)
    assert proc.returncode == 5


def test_productfetcher_fetches_a_file_locator(tool_pex: ToolPex, bare: Bare,
                                               tmp_path: Path) -> None:
    source = tmp_path / "archive" / "obs.dat"
    source.parent.mkdir()
    source.write_bytes(os.urandom(100_000))
    payload = ok_json(bare(tool_pex("productfetcher"), "-l", source.as_uri(), "-o", "got",
                           "--json", cwd=tmp_path))
    assert payload["fetched"] == 1
    assert (tmp_path / "got" / "obs.dat").read_bytes() == source.read_bytes()


def test_deliver_copies_products_with_sums(tool_pex: ToolPex, bare: Bare,
                                           tmp_path: Path) -> None:
    run = tmp_path / "req-1"
    (run / "products" / "images").mkdir(parents=True)
    (run / "products" / "images" / "a.fits").write_bytes(b"A" * 2880)
    (run / "working").mkdir()
    area = tmp_path / "deliveries"
    area.mkdir()
    proc = bare(tool_pex("deliver"), "-l", area, "--prefix", "someone", run, "--json",
                cwd=tmp_path)
    ok_json(proc)
    delivered = area / "someone" / "req-1"
    assert (delivered / "images" / "a.fits").read_bytes() == b"A" * 2880
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=delivered,
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0 and check.stdout == "images/a.fits: OK\n"


def test_ingest_then_productfetcher_by_uid(tool_pex: ToolPex, bare: Bare,
                                           tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "cal.tgz").write_bytes(b"caltables" * 100)
    (source / "manifest.yaml").write_text(
        "products:\n  - name: req1\n    type: calibration\n    files: [cal.tgz]\n")
    archive = tmp_path / "archive"
    payload = ok_json(bare(tool_pex("ingest"), source, "--archive-root", archive, "--json",
                           cwd=tmp_path))
    assert [(p["locator"], p["status"]) for p in payload["products"]] == [
        ("uid://docket/calibration/req1/v1", "ingested")]
    fetched = ok_json(bare(tool_pex("productfetcher"), "--catalog", archive, "-l",
                           "uid://docket/calibration/req1", "-o", "back", "--json",
                           cwd=tmp_path))
    assert fetched["fetched"] == 1
    assert (tmp_path / "back" / "req1" / "cal.tgz").read_bytes() == b"caltables" * 100


def processing_dir(root: Path, name: str = "req-7", capability: str = "null") -> Path:
    d = root / name
    for sub in ("rawdata", "working", "products"):
        (d / sub).mkdir(parents=True)
    (d / "metadata.json").write_text(json.dumps({
        "docket": 1, "request": name, "version": 1, "execution": 1, "capability": capability,
        "parameters": {}, "directory": str(d), "output_dir": None,
        "created": "2026-11-21T09:00:00+00:00"}))
    return d


def test_conveyor_delivers_to_qa_and_retrieves(tool_pex: ToolPex, bare: Bare,
                                               tmp_path: Path) -> None:
    run = processing_dir(tmp_path / "proc")
    (run / "products" / "image.fits").write_bytes(b"F" * 2880)
    qa = tmp_path / "qa"
    qa.mkdir()
    pex = tool_pex("conveyor")
    env = {"DOCKET_CONVEYOR_QA_AREA": str(qa)}
    ok_json(bare(pex, "--deliver", run / "metadata.json", "--json", cwd=tmp_path, env=env))
    assert (run / "products").is_symlink()
    moved = (run / "products").resolve()
    assert moved.is_relative_to(qa.resolve()) and (moved / "image.fits").is_file()
    ok_json(bare(pex, "--retrieve", run / "metadata.json", "--json", cwd=tmp_path, env=env))
    assert not (run / "products").is_symlink()
    assert (run / "products" / "image.fits").read_bytes() == b"F" * 2880


def test_annihilator_dry_run_lists_and_keeps(tool_pex: ToolPex, bare: Bare,
                                             tmp_path: Path) -> None:
    processing = tmp_path / "processing"
    old = processing / "req-1"
    (old / "working").mkdir(parents=True)
    (old / "working" / "casa.log").write_bytes(b"x" * 1000)
    for path in (old / "working" / "casa.log", old / "working", old):
        os.utime(path, (1577836800.0, 1577836800.0))
    config = tmp_path / "tools.yaml"
    config.write_text("annihilator:\n  areas:\n"
                      f"    - {{name: processing, root: {processing}, max_age_days: 30}}\n")
    pex = tool_pex("annihilator")
    proc = bare(pex, "--config", config, "--dry-run", "--json", cwd=tmp_path)
    assert "req-1" in proc.stdout, proc.stderr
    ok_json(proc)
    assert (old / "working" / "casa.log").is_file()
    ok_json(bare(pex, "--config", config, "--json", cwd=tmp_path))
    assert not old.exists()


def vela_job(cwd: Path) -> Path:
    (cwd / "x.ms").mkdir()
    (cwd / "x.ms" / "table.dat").write_text("not a real table\n")
    job = {"docket_casa_job": 1, "mode": "imaging",
           "tasks": [{"task": "tclean", "args": {"vis": str(cwd / "x.ms"), "imagename": "img",
                                                  "imsize": [64, 64], "cell": "8arcsec"}},
                     {"task": "exportfits", "args": {"imagename": "img.image",
                                                     "fitsimage": str(cwd / "out/img.fits")}}],
           "products": [str(cwd / "out" / "img.fits")],
           "vela": {"fail": "none", "fail_at": None}}
    path = cwd / "casa-envoy-job.json"
    path.write_text(json.dumps(job))
    return path


def test_vela_runs_a_job(tool_pex: ToolPex, bare: Bare, tmp_path: Path) -> None:
    vela_job(tmp_path)
    payload = ok_json(bare(tool_pex("vela"), "--json", cwd=tmp_path))
    assert payload["tasks"] == ["tclean", "exportfits"]
    assert (tmp_path / "out" / "img.fits").read_bytes()[:30] == b"SIMPLE  =                    T"
    assert len(list(tmp_path.glob("casa-*.log"))) == 1


def test_casa_envoy_runs_vela_from_its_own_pex(tool_pex: ToolPex, bare: Bare,
                                               tmp_path: Path) -> None:
    """No vela on PATH: the envoy runs the vela it carries (``python -m cli.vela``)."""
    params = {"ms": "x.ms", "use_vela": True, "imsize": 32, "cell": "8arcsec"}
    run = processing_dir(tmp_path, "req-1", "casa-imaging")
    metadata = json.loads((run / "metadata.json").read_text())
    (run / "metadata.json").write_text(json.dumps({**metadata, "parameters": params}))
    (run / "request.yaml").write_text(json.dumps({
        "apiVersion": "docket/v1", "kind": "CapabilityRequest", "metadata": {"name": "req-1"},
        "spec": {"capability": "casa-imaging", "parameters": params}}))
    (run / "rawdata" / "x.ms").mkdir()
    (run / "rawdata" / "x.ms" / "table.dat").write_text("not a real table\n")
    payload = ok_json(bare(tool_pex("casa-envoy"), "--imaging", run, "--json",
                           cwd=tmp_path))
    assert (payload["verdict"], payload["program"]) == ("success", "vela")
    assert [p["path"] for p in payload["products"]] == ["products/x.fits"]
    report = json.loads((run / "working" / "casa-envoy-report.json").read_text())
    assert report["verdict"] == "success"


def test_ingest_envoy_stages_and_ingests(tool_pex: ToolPex, bare: Bare,
                                         tmp_path: Path) -> None:
    run = processing_dir(tmp_path, "req1.v1.e1", "std_calibration")
    metadata = json.loads((run / "metadata.json").read_text())
    (run / "metadata.json").write_text(json.dumps({**metadata, "request": "req1"}))
    (run / "products" / "gain.tbl").mkdir()
    (run / "products" / "gain.tbl" / "table.dat").write_bytes(b"gain" * 50)
    (run / "products" / "weblog.tgz").write_bytes(b"weblog")
    archive = tmp_path / "archive"
    payload = ok_json(bare(tool_pex("ingest-envoy"), "--calibration", run, "--archive-root",
                           archive, "--json", cwd=tmp_path))
    assert payload["staged"] == ["req1.caltables.tgz", "weblog.tgz"]
    assert [(p["locator"], p["status"]) for p in payload["products"]] == [
        ("uid://docket/calibration/req1/v1", "ingested")]
    assert sorted(os.listdir(archive / "calibration" / "req1" / "v1")) == payload["staged"]


def test_docket_validates_the_shipped_example(tool_pex: ToolPex, bare: Bare,
                                              tmp_path: Path) -> None:
    proc = bare(tool_pex("docket"), "validate", "--templates", REPO / "templates",
                REPO / "templates" / "demo" / "example-request.yaml", "--json", cwd=tmp_path)
    ok_json(proc)


def test_docket_tick_runs_a_request_with_the_null_pex(tool_pex: ToolPex, bare: Bare,
                                                      tmp_path: Path) -> None:
    """The engine PEX runs a whole request on the local engine; its node is null.pex."""
    home = tmp_path / "home"
    tools = home / "tools"
    tools.mkdir(parents=True)
    tool_pex("null").rename(tools / "null")  # the templates call tool("null")
    shutil.copytree(REPO / "templates", home / "templates")
    (home / "docket.yaml").write_text(f"tools_dir: {tools}\n")
    pex = tool_pex("docket")
    request = REPO / "templates" / "null" / "example-request.yaml"
    ok_json(bare(pex, "submit", request, "--home", home, "--json", cwd=tmp_path))
    tick = ok_json(bare(pex, "tick", "--wait", "--home", home, "--json", cwd=tmp_path))
    assert tick["accepted"] == 1
    shown = ok_json(bare(pex, "show", "null-example", "--home", home, "--json", cwd=tmp_path))
    assert shown["request"]["state"] == "complete", shown
    directory = Path(shown["executions"][0]["directory"])
    assert (directory / "result.txt").is_file()
    assert (directory / "run.out").read_text() == "hello from null\n"


@pytest.mark.casa
def test_casa_envoy_pex_runs_real_casa_through_its_python_setting(
        tool_pex: ToolPex, bare: Bare, tmp_path: Path) -> None:
    """The PEX carries no CASA: ``python`` names an interpreter with casatasks (here the
    dev venv's). HOME is set because CASA 6.7 crashes (SIGSEGV) without one."""
    if importlib.util.find_spec("casatasks") is None:  # importing it would start CASA
        pytest.skip("casatasks is not installed (make casa)")
    spec = importlib.util.spec_from_file_location(
        "pex_casa_testkit", REPO / "tests" / "casa" / "casa_testkit.py")
    assert spec is not None and spec.loader is not None
    testkit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(testkit)
    ms = testkit.build_tiny_ms(tmp_path / "sim")
    run = testkit.make_processing_dir(tmp_path / "run", {"ms": ms.name, "imsize": 64,
                                                         "cell": "8arcsec"}, ms=ms)
    home = tmp_path / "home"
    home.mkdir()
    pex = tool_pex("casa-envoy")
    no_casa = bare(pex, "--imaging", run, cwd=tmp_path, env={"HOME": str(home)})
    assert no_casa.returncode == 3
    assert no_casa.stderr.startswith("Error: no measures data for CASA: python-casacore is "
                                     "not installed for ")
    payload = ok_json(bare(pex, "--imaging", run, "--json", cwd=tmp_path,
                           env={"HOME": str(home), "DOCKET_CASA_ENVOY_PYTHON": sys.executable}))
    assert (payload["verdict"], payload["program"]) == ("success", "casa")
    fits = run / "products" / f"{ms.name[:-3]}.fits"
    assert fits.read_bytes()[:30] == b"SIMPLE  =                    T"
