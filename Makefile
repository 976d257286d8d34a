# docket — every install step lives here. Needs only python3, make and git.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := pex-build/requirements.lock
STAMP  := $(VENV)/.installed
CASA   := $(VENV)/.casa-installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: help venv casa system run tick test test-fast lint schemas bench pex lock clean demo-data

help:
	@echo "make run        set up, then watch the embedded home (spool/, state/) on the local engine"
	@echo "make test       set up (CASA included, Debian test programs when root), then run the whole suite"
	@echo "make system     install the Debian programs tests use (debian-packages.txt), if root"
	@echo "make test-fast  the suite without real CASA"
	@echo "make lint       ruff"
	@echo "make schemas    regenerate schemas/*.schema.json from the pydantic models"
	@echo "make bench      run bench/ and rewrite docs/performance.md"
	@echo "make pex        build dist/<tool>.pex for every tool"
	@echo "make demo-data  simulate the tiny VLASS observation with CASA, ingest it into demo-data/archive"

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade 'pip>=23'
	$(PIP) install -c $(LOCK) -e '.[dev]'
	touch $@

venv: $(STAMP)

$(CASA): $(STAMP)
	$(PIP) install -c $(LOCK) -e '.[dev,casa]'
	touch $@

casa: $(CASA)

# Programs some tests drive for real (podman, chromium, graphviz, libfiu ...), one Debian
# package a line in debian-packages.txt. Installed only when missing and only as root with
# apt-get; elsewhere the tests that need them skip and say which package to install.
system:
	@bash pex-build/system-packages.sh debian-packages.txt

run: $(STAMP)
	$(BIN)/docket watch

tick: $(STAMP)
	$(BIN)/docket tick

test: $(CASA) system
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not casa"

lint: $(STAMP)
	$(BIN)/ruff check .

schemas: $(STAMP)
	$(BIN)/python -m schemas

bench: $(CASA)
	$(BIN)/python bench/run.py

demo-data: $(CASA)
	OMP_NUM_THREADS=1 $(BIN)/python -m envoys.casa.demodata demo-data

pex: $(STAMP)
	$(BIN)/python pex-build/build.py

lock: $(CASA)
	$(BIN)/python -m pip freeze --exclude-editable | sort > $(LOCK)

clean:
	rm -rf $(VENV) dist build *.egg-info
