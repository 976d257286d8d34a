"""Post-CASA work of a recipe run (``casa-envoy --post``): what the survey checks after CASA.

Run in the processing directory after ``casa-envoy --recipe`` succeeded. It reads the
recipe's ``post:`` section, all of it optional::

    post:
      caltables: [T1.G, T1.B]          # working/ tables tarred into products/ as
                                       # <request>.caltables.tgz (ingest-envoy's rules)
      image_stats:
        fits: products/T1.fits
        save: products/T1.stats.json
        qa: {max_rms_jy: 0.01, min_dynamic_range: 10, min_peak_jy: 0.05}
      components:
        fits: products/T1.pbcor.fits
        nsigma: 5
        csv: products/T1.components.csv
        json: products/T1.components.json
      summary:
        title: Calibration of demo-vlass
        stats: [T1.G.calstat.json]      # saved task results in working/
        text: products/summary.txt
        html: products/weblog.html

and always writes ``products/provenance.json`` (inputs with locators and sha256, the
recipe and its rendered task calls, the CASA version, node and attempt, every product
with its sha256) and ``results.json`` (the automatic QA verdict and the numbers behind
it), which docket records in the execution's results.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from docket.errors import Invalid, NotFound
from docket.fileio import atomic_write, safe_join, sha256_file
from docket.procdir import ProcessingDirectory, read_metadata, root_of
from envoys.casa.auditor import REPORT_FILE
from envoys.casa.foundation import NEEDS
from envoys.casa.imagestats import find_components, image_stats, read_fits

__all__ = ["PROVENANCE_FILE", "RESULTS_FILE", "FETCH_REPORT", "run_post", "qa_verdict"]

PROVENANCE_FILE = "provenance.json"
RESULTS_FILE = "results.json"
# the gathering-data nodes' `productfetcher --json` output (their submit files' `output`:
# fetch.out, and fetch_<input>.out for a second input)
FETCH_REPORT = "fetch.out"
_FIX = "fix the recipe's post: section (recipe.yaml.j2) and resubmit"


def qa_verdict(stats: dict[str, Any], limits: dict[str, Any]) -> dict[str, Any]:
    """The automatic QA: each limit checked against the image statistics."""
    checks = []
    for key, stat, better in (("max_rms_jy", "rms_jy", "below"),
                              ("min_dynamic_range", "dynamic_range", "above"),
                              ("min_peak_jy", "peak_jy", "above")):
        if limits.get(key) is None:
            continue
        limit, value = float(limits[key]), stats.get(stat)
        ok = value is not None and (value <= limit if better == "below" else value >= limit)
        checks.append({"check": key, "limit": limit, "value": value, "pass": ok})
    return {"verdict": "pass" if all(c["pass"] for c in checks) else "fail",
            "checks": checks}


def _digest(path: Path) -> tuple[int, str]:
    from docket.outputs import tree_sha256

    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()), \
            tree_sha256(path)
    return path.stat().st_size, sha256_file(path)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _rows(prefix: str, value: Any) -> list[tuple[str, str]]:
    """A nested statistics record (calstat's, imstat's) as name/value rows."""
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _rows(f"{prefix}.{k}" if prefix
                                                              else str(k), v)]
    if isinstance(value, list) and len(value) == 1:
        return _rows(prefix, value[0])
    if isinstance(value, float):
        return [(prefix, f"{value:.6g}")]
    return [(prefix, str(value))]


def run_post(path: Path, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Do the post-CASA work in the processing directory at ``path``; return a summary."""
    say = progress or (lambda _line: None)
    directory = ProcessingDirectory(root_of(path))
    if not directory.metadata_path.is_file():
        raise NotFound(f"{directory.metadata_path} does not exist",
                       "give a processing directory written by docket's core")
    metadata = read_metadata(directory.metadata_path, NEEDS).raw
    directory.products.mkdir(exist_ok=True)
    from envoys.casa.recipe import RECIPE_FILE, load_recipe

    # the input MS stays behind on the CASA node: post-CASA work does not need it
    recipe = load_recipe(directory.root / RECIPE_FILE, directory, check_ms=False)
    report = _json(directory.working / REPORT_FILE)
    if not isinstance(report, dict):
        raise NotFound(f"{directory.working / REPORT_FILE} does not exist or is unreadable",
                       "run casa-envoy --recipe first")
    if report.get("verdict") != "success":
        raise Invalid(f"the CASA run of this directory failed: "
                      f"{(report.get('reasons') or [{}])[0].get('message')}",
                      f"see {directory.working / REPORT_FILE}")
    lines: list[str] = []
    say("post-CASA work: verifying the declared products")
    for product in recipe.products:
        if not product.exists():
            raise NotFound(f"product {directory.relative(product)} is missing",
                           "the CASA step should have written it")
    post = recipe.post
    results: dict[str, Any] = {"recipe": recipe.name}

    def target(value: Any, where: str) -> Path:
        if not isinstance(value, str) or not value:
            raise Invalid(f"recipe post.{where} must be a path, got {value!r}", _FIX)
        return safe_join(directory.root, value)

    tables = post.get("caltables") or []
    if tables:
        from envoys.ingest.staging import reproducible_tar

        paths = [safe_join(directory.working, t) for t in tables]
        missing = [directory.relative(p) for p in paths if not p.is_dir()]
        if missing:
            raise NotFound(f"calibration table(s) {', '.join(missing)} missing",
                           "the recipe's calibration steps should have written them")
        tar = directory.products / f"{metadata['request']}.caltables.tgz"
        reproducible_tar(tar, paths)
        lines.append(f"tarred {len(paths)} calibration table(s) into "
                     f"{directory.relative(tar)}")
    stats = None
    if post.get("image_stats"):
        spec = post["image_stats"]
        image = read_fits(target(spec.get("fits"), "image_stats.fits"))
        stats = image_stats(image)
        if spec.get("save"):
            atomic_write(target(spec["save"], "image_stats.save"),
                         json.dumps(stats, indent=2) + "\n", durable=False)
        results["image_stats"] = {k: stats[k] for k in ("rms_jy", "peak_jy",
                                                         "dynamic_range")}
        if spec.get("qa"):
            results["qa"] = {"automatic": qa_verdict(stats, spec["qa"])}
            lines.append(f"automatic QA: {results['qa']['automatic']['verdict']}")
        lines.append(f"image statistics: rms {stats['rms_jy']}, peak {stats['peak_jy']}, "
                     f"dynamic range {stats['dynamic_range']}")
    if post.get("components"):
        spec = post["components"]
        image = read_fits(target(spec.get("fits"), "components.fits"))
        rms = image_stats(image)["rms_jy"] if stats is None or spec.get("fits") != (
            post.get("image_stats") or {}).get("fits") else stats["rms_jy"]
        nsigma = float(spec.get("nsigma", 5))
        components = find_components(image, rms, nsigma)
        if spec.get("json"):
            atomic_write(target(spec["json"], "components.json"), json.dumps(
                {"image": image.path.name, "rms_jy": rms, "nsigma": nsigma,
                 "components": components}, indent=2) + "\n", durable=False)
        if spec.get("csv"):
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=["name", "ra_deg", "dec_deg", "peak_jy",
                                                     "snr", "x_pix", "y_pix"])
            writer.writeheader()
            writer.writerows(components)
            atomic_write(target(spec["csv"], "components.csv"), out.getvalue(),
                         durable=False)
        results["components"] = len(components)
        lines.append(f"component list: {len(components)} above {nsigma:g} x rms")
    if post.get("summary"):
        spec = post["summary"]
        _write_summary(spec, recipe, report, directory, target)
        lines.append("summary written")
    provenance = _provenance(directory, metadata, recipe, report)
    atomic_write(directory.products / PROVENANCE_FILE, json.dumps(provenance, indent=2)
                 + "\n", durable=False)
    results["provenance"] = f"products/{PROVENANCE_FILE}"
    results["casa_version"] = provenance["casa"]["version"]
    atomic_write(directory.root / RESULTS_FILE, json.dumps(results, indent=2) + "\n",
                 durable=False)
    lines.append(f"provenance of {len(provenance['products'])} product(s) in "
                 f"products/{PROVENANCE_FILE}")
    return {"directory": str(directory.root), "results": results, "lines": lines}


def _write_summary(spec: dict[str, Any], recipe: Any, report: dict[str, Any],
                   directory: Any, target: Callable[[Any, str], Path]) -> None:
    title = str(spec.get("title") or f"{recipe.name} summary")
    sections: list[tuple[str, list[tuple[str, str]]]] = []
    sections.append(("CASA run", [("verdict", str(report.get("verdict"))),
                                  ("program", str(report.get("program"))),
                                  ("duration_s", str(report.get("duration_s"))),
                                  ("tasks", ", ".join(s.task for s in recipe.steps))]))
    for name in spec.get("stats") or []:
        data = _json(safe_join(directory.working, name))
        sections.append((f"solution statistics: {name}",
                         _rows("", data) if data is not None else [("missing", name)]))
    products = sorted(p for p in directory.products.iterdir() if not p.name.startswith("."))
    sections.append(("products", [(p.name, f"{_digest(p)[0]} bytes") for p in products]))
    if spec.get("text"):
        text = [title, "=" * len(title)]
        for heading, rows in sections:
            text += ["", heading] + [f"  {k}: {v}" for k, v in rows]
        atomic_write(target(spec["text"], "summary.text"), "\n".join(text) + "\n",
                     durable=False)
    if spec.get("html"):
        parts = [f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>",
                 f"<h1>{html.escape(title)}</h1>"]
        for heading, rows in sections:
            parts.append(f"<h2>{html.escape(heading)}</h2><table>")
            parts += [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                      for k, v in rows]
            parts.append("</table>")
        atomic_write(target(spec["html"], "summary.html"), "\n".join(parts) + "\n",
                     durable=False)


def _provenance(directory: Any, metadata: dict[str, Any], recipe: Any,
                report: dict[str, Any]) -> dict[str, Any]:
    inputs = []
    reports = [directory.root / FETCH_REPORT, *sorted(directory.root.glob("fetch_*.out"))]
    for fetched in (_json(p) for p in reports):
        if not isinstance(fetched, dict):
            continue
        for item in fetched.get("files") or []:
            inputs.append({"locator": item.get("locator"), "path": item.get("dest"),
                           "size_bytes": item.get("size_bytes"), "sha256": item.get("sha256")})
    job = _json(directory.working / "casa-envoy-job.json") or {}
    version_file = directory.working / "casa-version.txt"
    products = []
    for path in sorted(directory.products.iterdir()):
        if path.name.startswith(".") or path.name == PROVENANCE_FILE:
            continue
        size, digest = _digest(path)
        products.append({"path": f"products/{path.name}", "size_bytes": size,
                         "sha256": digest})
    return {
        "docket_provenance": 1,
        "request": metadata["request"], "version": metadata["version"],
        "execution": metadata["execution"], "capability": metadata["capability"],
        "parameters": metadata.get("parameters", {}),
        "inputs": inputs,
        "recipe": {"name": recipe.name,
                   "sha256": hashlib.sha256(recipe.text.encode()).hexdigest(),
                   "tasks": job.get("tasks", [])},
        "casa": {"version": version_file.read_text().strip() if version_file.is_file()
                 else None,
                 "program": report.get("program"), "host": report.get("host"),
                 "attempt": report.get("attempt"), "started": report.get("started"),
                 "finished": report.get("finished")},
        "products": products,
    }
