"""What a job writes into products/ comes back, whether or not its submit file lists it.

The rule lives in the rendered submit files (``docket.transfer``): a scratch-directory
job's ``transfer_output_files`` gains ``products``, and a job that gets no products/ of
its own is given an empty one to return. So the local engine, sandboxing or strict, and
a pool all read it from the same file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from docket.capabilities import load_capability, resolve_parameters
from docket.dag import read_dag
from docket.render import render_execution
from docket.submit import check_submit, expand_submit
from docket.transfer import EMPTY_PRODUCTS, return_products
from tests.conftest import drop, request_doc
from tests.htcondor.condorkit import DATA, SHIPPED, TEMPLATES, TOOLS

PRODUCT = "products/deep/surprise.txt"


def _render(templates: Path, name: str, directory: Path, given: dict, shared: bool,
            pex_dir: Path | None = None) -> Path:
    capability = load_capability(templates, name)
    parameters, problems = resolve_parameters(capability, given)
    assert not problems, [str(p) for p in problems]
    meta = {"name": "r1", "version": 1, "execution": 3, "number": 1, "capability": name,
            "priority": 0, "output_dir": None, "created": "2026-12-01T00:00:00.000000Z",
            "labels": {}}
    return render_execution(capability, directory, request=meta, parameters=parameters,
                            document=json.dumps({"spec": {}}), tools_dir=TOOLS,
                            shared_filesystem=shared, pex_dir=pex_dir).dag


def _with_surprise(root: Path) -> Path:
    """A templates folder: the shipped one, and the surprise capability."""
    shutil.copytree(TEMPLATES, root)
    shutil.copytree(DATA / "capabilities" / "surprise", root / "surprise")
    return root


def _procs(dag_path: Path, shared: bool) -> dict[str, list]:
    dag = read_dag(dag_path)
    return {name: expand_submit(dag_path.parent / node.submit_file, name, node.vars, 1,
                                shared_filesystem=shared)
            for name, node in dag.nodes.items() if node.submit_file}


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "strict"])
def test_the_rendered_submit_files_bring_products_back(tmp_path, shared):
    dag = _render(_with_surprise(tmp_path / "templates"), "surprise", tmp_path / "e3", {}, shared,
                  pex_dir=Path("/opt/docket/pex"))
    procs = _procs(dag, shared)
    for node in ("make", "other"):
        (proc,) = procs[node]
        assert proc.transfer_files, node
        assert proc.transfer_output_files == [f"{node}.txt" if node == "other"
                                              else "listed.txt", "products"], node
        # an empty products/ goes in, so a job that writes none is not held (code 12)
        assert proc.transfer_input_files == [EMPTY_PRODUCTS], node
        assert not check_submit(dag.parent / f"{node}.sub"), node
    empty = tmp_path / "e3" / EMPTY_PRODUCTS
    assert empty.is_dir() and not any(empty.iterdir())


def test_every_shipped_scratch_job_that_lists_outputs_returns_products(tmp_path):
    for name in SHIPPED:
        given = load_capability(TEMPLATES, name).definition.example or {}
        for shared in (True, False):
            dag = _render(TEMPLATES, name, tmp_path / f"{name}-{shared}", given, shared)
            for node, procs in _procs(dag, shared).items():
                for proc in procs:
                    if not proc.transfer_files or not proc.transfer_output_files:
                        continue  # runs in place, or HTCondor's default (see transfer.py)
                    where = (name, shared, node)
                    assert "products" in proc.transfer_output_files, where
                    assert [i for i in proc.transfer_input_files
                            if Path(i).name == "products"], where


@pytest.mark.parametrize("strict", [False, True], ids=["local", "local-strict"])
def test_an_unlisted_product_reaches_the_processing_directory_and_results(
        home, docket, tmp_path, strict):
    shutil.rmtree(home / "templates")
    _with_surprise(home / "templates")
    if strict:
        # no PEX build needed: the site's pex_dir holds the venv's null as null.pex
        pex = tmp_path / "pex"
        pex.mkdir()
        (pex / "null.pex").symlink_to(TOOLS / "null")
        (home / "sites.yaml").write_text("sites:\n  - name: local\n"
                                         f"    shared_filesystem: false\n    pex_dir: {pex}\n")
    drop(home, "s.yaml", request_doc("s", capability="surprise"))
    assert docket("tick", "--wait").code == 0
    shown = docket("show", "s", "--json").json()
    assert shown["request"]["state"] == "complete", shown
    execution = shown["executions"][0]
    assert {(n["node"], n["state"], n["attempts"]) for n in execution["nodes"]} == {
        ("make", "done", 1), ("other", "done", 1)}
    directory = Path(execution["directory"])
    assert (directory / "listed.txt").is_file() and (directory / "other.txt").is_file()
    product = directory / PRODUCT
    assert product.is_file(), sorted(str(p.relative_to(directory))
                                     for p in directory.rglob("*"))
    assert PRODUCT in product.read_text()  # null writes its path into the file
    if strict:
        (proc,) = expand_submit(directory / "make.sub", "make", {}, 1,
                                shared_filesystem=False)
        assert proc.executable == str(tmp_path / "pex" / "null.pex")
    results = docket("results", "--json").json()
    (mine,) = [e for e in results["executions"] if e["request"] == "s"] or [None]
    assert mine is not None, results
    assert [p["path"] for p in mine["products"]] == [PRODUCT]


@pytest.mark.parametrize("lines, shared, outputs, inputs", [
    # a list without products gains it, and an empty products/ to bring it back in
    ("transfer_output_files = a.txt", True, ["a.txt", "products"], [EMPTY_PRODUCTS]),
    # the job gets products/ of its own: nothing more to transfer in
    ("transfer_input_files = products\ntransfer_output_files = working", True,
     ["working", "products"], ["products"]),
    # products/ contents only make no products/ in the scratch directory
    ("transfer_input_files = products/\ntransfer_output_files = working", True,
     ["working", "products"], ["products/", EMPTY_PRODUCTS]),
    # already listed, nothing asked back, or HTCondor's default: as written
    ("transfer_output_files = products,x", True, ["products", "x"], []),
    ('transfer_output_files = ""', True, [], []),
    ("", True, None, []),
])
def test_what_the_rule_changes_in_a_submit_file(tmp_path, lines, shared, outputs, inputs):
    sub = tmp_path / "j.sub"
    sub.write_text(f"executable = /bin/true\nshould_transfer_files = YES\n{lines}\nqueue\n")
    return_products(sub, tmp_path, shared)
    (proc,) = expand_submit(sub, "j", {}, 1, shared_filesystem=shared)
    assert (proc.transfer_output_files, proc.transfer_input_files) == (outputs, inputs)
    assert not check_submit(sub)


def test_a_job_running_in_place_or_elsewhere_is_handled_as_htcondor_would(tmp_path):
    sub = tmp_path / "j.sub"
    text = "executable = /bin/true\ntransfer_output_files = a.txt\nqueue\n"
    sub.write_text(text)
    assert not return_products(sub, tmp_path, True)  # runs in place: sees products/
    assert sub.read_text() == text
    assert return_products(sub, tmp_path, False)  # no shared filesystem: a scratch dir
    # with initialdir elsewhere, the empty products/ is named by its full path
    sub.write_text("executable = /bin/true\nshould_transfer_files = YES\n"
                   f"initialdir = {tmp_path / 'elsewhere'}\ntransfer_output_files = a\n"
                   "queue\n")
    return_products(sub, tmp_path, True)
    (proc,) = expand_submit(sub, "j", {}, 1)
    assert proc.transfer_input_files == [str(tmp_path / EMPTY_PRODUCTS)]
