"""'docket report': the static site, written incrementally, checked in a real browser."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from tests.conftest import REPO, drop, request_doc

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("DOCKET_TEST_ARTIFACTS", REPO / "test-artifacts"))


def _demo(name: str, **parameters) -> str:
    return yaml.safe_dump({"apiVersion": "docket/v1", "kind": "CapabilityRequest",
                           "metadata": {"name": name},
                           "spec": {"capability": "demo", "parameters": {
                               "targets": ["a", "b", "c"], "sleep_s": 0, **parameters}}})


@pytest.fixture
def site(home, docket, tmp_path):
    drop(home, "good.yaml", _demo("good"))
    drop(home, "broken.yaml", _demo("broken", fail_item="b"))
    folder = home / "templates" / "writer"  # a capability that leaves a product
    folder.mkdir()
    (folder / "capability.yaml").write_text("name: writer\n")
    (folder / "workflow.dag.j2").write_text("JOB write write.sub\n")
    (folder / "write.sub.j2").write_text(
        "executable = /bin/sh\narguments = \"-c 'mkdir -p products; printf fits > "
        "products/image.fits'\"\nshould_transfer_files = NO\nqueue\n")
    drop(home, "plain.yaml", request_doc("plain", capability="writer"))
    assert docket("tick", "--wait").code == 0
    out = tmp_path / "site"
    result = docket("report", "--out", str(out), "--json").json()
    assert sorted(result["requests_written"]) == ["broken", "good", "plain"]
    return out


def test_only_requests_with_new_events_are_written_again(home, docket, site):
    pages = {p.name: p.stat().st_mtime_ns for p in (site / "requests").iterdir()}
    again = docket("report", "--out", str(site), "--json").json()
    assert again["requests_written"] == [] and again["index_written"] is False
    assert "nothing changed" in docket("report", "--out", str(site)).out

    drop(home, "late.yaml", request_doc("late"))
    docket("tick", "--wait")
    docket("cancel", "plain")  # an ended request: refused, but the refusal is an event
    after = docket("report", "--out", str(site), "--json").json()
    assert "late" in after["requests_written"] and "good" not in after["requests_written"]
    assert after["index_written"] is True
    assert (site / "requests" / "good.html").stat().st_mtime_ns == pages["good.html"]
    assert "late" in (site / "requests.html").read_text()
    full = docket("report", "--out", str(site), "--full", "--json").json()
    assert len(full["requests_written"]) == 4


def test_a_request_page_has_products_failures_and_logs(site):
    broken = (site / "requests" / "broken.html").read_text()
    assert "node process_1: job exited with 1" in broken
    assert "exit_code 1,2 -&gt; fail" in broken  # the failure policy rule that fired
    assert "process_1.err" in broken
    plain = (site / "requests" / "plain.html").read_text()
    assert "products/image.fits" in plain
    import hashlib

    assert f"<code>{hashlib.sha256(b'fits').hexdigest()}</code>" in plain


def test_without_graphviz_the_dag_is_still_drawn_with_its_states(home, docket, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    drop(home, "broken.yaml", _demo("broken", fail_item="b"))
    docket("tick", "--wait")
    out = tmp_path / "site"
    result = docket("report", "--out", str(out), "--json").json()
    assert result["dag_drawn_by"] == "docket"
    page = (out / "requests" / "broken.html").read_text()
    assert "drawn by docket (Graphviz not installed)" in page
    assert page.count('<g class="node ') == 5
    assert '<g class="node failed"><title>process_1: failed</title>' in page
    assert '<g class="node waiting"><title>deliver: waiting</title>' in page


# in a real browser ------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium "
           "chromium-driver)")


@pytest.fixture
def browser(tmp_path):
    pytest.importorskip("selenium", reason="needs selenium (pip install -e '.[dev]')")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1300,1600",
                 f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _console_errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _links_resolve(driver) -> int:
    from selenium.webdriver.common.by import By

    count = 0
    for a in driver.find_elements(By.CSS_SELECTOR, "a[href]"):
        url = urlsplit(a.get_attribute("href"))  # the browser's resolved address
        assert url.scheme == "file", url
        assert Path(unquote(url.path)).exists(), f"broken link {a.get_attribute('href')}"
        count += 1
    return count


@needs_chromium
def test_the_report_in_a_browser(site, browser):
    from selenium.webdriver.common.by import By

    from docket.htmlreport import NODE_COLOURS

    browser.get((site / "index.html").as_uri())
    assert _console_errors(browser) == []
    states = {row.find_elements(By.TAG_NAME, "td")[0].text:
              row.find_elements(By.TAG_NAME, "td")[1].text
              for row in browser.find_elements(By.CSS_SELECTOR, "#states tr")[1:]}
    assert states == {"complete": "2", "failed": "1"}
    failures = browser.find_element(By.ID, "failures").text
    assert "broken" in failures and "process_1" in failures
    assert _links_resolve(browser) >= 4

    browser.find_element(By.LINK_TEXT, "broken").click()
    assert browser.current_url.endswith("/requests/broken.html")
    assert _console_errors(browser) == []
    assert browser.find_element(By.ID, "state").text == "failed"
    nodes = browser.find_elements(By.CSS_SELECTOR, ".dag svg g.node")
    drawn = {}
    for g in nodes:
        name = g.find_element(By.TAG_NAME, "title").get_attribute("textContent")
        shape = g.find_element(By.CSS_SELECTOR, "path, polygon, rect, ellipse")
        drawn[name.split(":")[0]] = (g.get_attribute("class").split()[-1],
                                     shape.get_attribute("fill"))
    assert drawn == {"fetch": ("done", NODE_COLOURS["done"]),
                     "process_0": ("done", NODE_COLOURS["done"]),
                     "process_1": ("failed", NODE_COLOURS["failed"]),
                     "process_2": ("done", NODE_COLOURS["done"]),
                     "deliver": ("waiting", NODE_COLOURS["waiting"])}
    drawn_by = "Graphviz dot" if shutil.which("dot") else "docket"
    assert f"drawn by {drawn_by}" in browser.find_element(By.CLASS_NAME, "legend").text
    assert _links_resolve(browser) >= 10  # overview, logs, the processing directory
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report-request-page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    browser.find_element(By.LINK_TEXT, "overview").click()
    assert browser.current_url.endswith("/index.html")
    browser.save_screenshot(str(ARTIFACTS / "report-overview.png"))
