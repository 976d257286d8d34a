"""sites.yaml: loading (with errors that name the line), choosing a site, and writing a
site's submit attributes into rendered files."""

from __future__ import annotations

import htcondor2
import pytest

from docket.errors import Invalid
from docket.sites import NoSite, apply_site, choose_site, engine_name, load_sites
from schemas.sites import Site, SitesFile
from tests.htcondor.condorkit import render

SITES = """\
default: [chtc, local]
sites:
  - name: chtc
    schedd: {collector: cm.chtc.wisc.edu, name: ap40.uw.osg-htc.org}
    submit_attributes:
      requirements: (OpSysMajorVer == 9)
      accounting_group: group_vlass
      +DESIRED_Sites: '"CHTC"'
    limits: {max_running: 2}
  - name: nmpost
    schedd: local
    enabled: false
  - name: aoc
    schedd: local
    limits: {max_running: 0}
"""


def test_without_sites_yaml_the_only_site_is_local(tmp_path):
    config = load_sites(tmp_path)
    assert [s.name for s in config.sites] == ["local"]
    assert config.default == ["local"]
    site = choose_site(None, config, {})
    assert site.name == "local" and engine_name(site) == "local"


def test_a_sites_file_loads_with_an_implicit_local_site(tmp_path):
    (tmp_path / "sites.yaml").write_text(SITES)
    config = load_sites(tmp_path)
    assert [s.name for s in config.sites] == ["chtc", "nmpost", "aoc", "local"]
    chtc = config.sites[0]
    assert engine_name(chtc) == "htcondor"
    assert chtc.schedd.collector == "cm.chtc.wisc.edu"
    assert chtc.submit_attributes["+DESIRED_Sites"] == '"CHTC"'


@pytest.mark.parametrize(("locations", "running", "expected"), [
    (None, {}, "chtc"),
    (None, {"chtc": 2}, "local"),
    (["chtc"], {"chtc": 1}, "chtc"),
    (["nmpost", "chtc"], {}, "chtc"),
    (["local"], {"local": 500}, "local"),
    (["chtc"], {"chtc": 2},
     NoSite("no site can take it: chtc has 2 of 2 executions running", wait=True)),
    (["nmpost"], {}, NoSite("no site can take it: nmpost is disabled", wait=False)),
    (["aoc", "nmpost"], {},
     NoSite("no site can take it: aoc has 0 of 0 executions running; nmpost is disabled",
            wait=True)),
    (["osg"], {}, NoSite("no site can take it: 'osg' is not in sites.yaml", wait=False)),
])
def test_choose_site_takes_the_first_enabled_site_under_its_limit(tmp_path, locations,
                                                                   running, expected):
    (tmp_path / "sites.yaml").write_text(SITES)
    chosen = choose_site(locations, load_sites(tmp_path), running)
    if isinstance(expected, NoSite):
        assert chosen == expected
        assert str(chosen) == expected.reason
    else:
        assert chosen.name == expected


@pytest.mark.parametrize(("text", "message"), [
    ("sites:\n  - name: pool\n", "sites.yaml:2: sites.0: site 'pool' needs a schedd"),
    ("sites:\n  - name: local\n    schedd: local\n",
     "sites.yaml:2: sites.0: the site 'local' is the embedded engine; it has no schedd"),
    ("sites:\n  - name: p\n    schedd: local\n    submit_attributes: {executable: /bin/sh}\n",
     "sites.0: submit_attributes may not set executable"),
    ("sites:\n  - name: p\n    schedd: local\n    submit_attributes: {request_memory: 9}\n",
     "submit_attributes may not set request_memory"),
    ("sites:\n  - name: p\n    schedd: local\n    dagman_options: {Force: true}\n",
     "unknown dagman_options Force"),
    ("sites:\n  - name: p\n    schedd: local\n  - name: p\n    schedd: local\n",
     "site 'p' is defined twice"),
    ("sites:\n  - name: P Q\n    schedd: local\n", "sites.yaml:2: sites.0.name: String"),
    ("sites:\n  - name: p\n    schedd: {collector: cm}\n",
     "sites.yaml:3: sites.0.schedd"),
    ("default: [nowhere]\nsites: []\n", "default names unknown site(s) nowhere"),
    ("sites:\n  - name: p\n    schedd: local\n    limits: {max_running: -1}\n",
     "sites.yaml:4: sites.0.limits.max_running: Input should be greater than or equal to 0"),
    ("sites: [\n", "sites.yaml:2: invalid YAML"),
])
def test_sites_file_errors_name_the_line(tmp_path, text, message):
    (tmp_path / "sites.yaml").write_text(text)
    with pytest.raises(Invalid) as caught:
        load_sites(tmp_path)
    assert message in str(caught.value)


def test_site_attributes_are_written_once_and_replaced_by_another_site(tmp_path):
    rendered, _ = render("demo", tmp_path / "e1", {"targets": ["a"]})
    chtc = Site(name="chtc", schedd="local", submit_attributes={
        "requirements": "(OpSysMajorVer == 9)", "accounting_group": "group_vlass",
        "+DESIRED_Sites": '"CHTC"', "priority": 5, "want_io_proxy": True})
    changed = apply_site(rendered.directory, chtc)
    assert sorted(p.name for p in changed) == ["deliver.sub", "fetch.sub", "process.sub"]
    text = (rendered.directory / "fetch.sub").read_text()
    assert text.endswith(
        "# docket:site begin (written by docket; do not edit)\n# site chtc\n"
        "accounting_group = group_vlass\n+DESIRED_Sites = \"CHTC\"\npriority = 5\n"
        "want_io_proxy = true\nif defined requirements\n"
        "  requirements = ($(requirements)) && ((OpSysMajorVer == 9))\nelse\n"
        "  requirements = ((OpSysMajorVer == 9))\nendif\n# docket:site end\nqueue\n")
    assert apply_site(rendered.directory, chtc) == []  # nothing left to change
    other = Site(name="osg", schedd="local", submit_attributes={"accounting_group": "osg"})
    apply_site(rendered.directory, other)
    described = htcondor2.Submit((rendered.directory / "fetch.sub").read_text())
    assert described["accounting_group"] == "osg"
    assert "requirements" not in described
    assert (rendered.directory / "fetch.sub").read_text().count("docket:site begin") == 1
    apply_site(rendered.directory, Site(name="local"))  # no attributes: the block goes
    assert "docket:site" not in (rendered.directory / "fetch.sub").read_text()


def test_site_values_cannot_add_commands_or_expand_macros(tmp_path):
    rendered, _ = render("null", tmp_path / "e1", {})
    with pytest.raises(Invalid, match="control character"):
        apply_site(rendered.directory, Site(name="p", schedd="local", submit_attributes={
            "accounting_group": "g\nexecutable = /bin/evil"}))
    apply_site(rendered.directory, Site(name="p", schedd="local", submit_attributes={
        "accounting_group": "$(executable)"}))
    described = htcondor2.Submit((rendered.directory / "null.sub").read_text())
    assert described.expand("accounting_group") == "$(executable)"


def test_sites_schema_rejects_unknown_fields():
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        SitesFile.model_validate({"sites": [{"name": "p", "schedd": "local", "limit": 3}]})
