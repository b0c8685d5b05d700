# The two commands of the README. Each creates .venv when missing and installs what it needs.
#   make demo   napari with the plugin open on a sample (headless: under Xvfb, writes a screenshot)
#   make test   ruff, pytest (under Xvfb via pytest-xvfb), npe2 validate --imports

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# These machines carry a CPU wheel of torch 2.13.0; pinning it keeps pip from pulling a
# multi-GB CUDA build. Elsewhere: `make TORCH=torch test` (or pip installs your usual torch).
TORCH ?= torch==2.13.0
SCREENSHOT ?= out/demo.png

.PHONY: demo test lint system-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Re-install when the project's dependencies change.
$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[dev]"
	# micro-sam's AIS decoder, the oracle of tests/model/test_instance_decoder.py; --no-deps keeps
	# the CPU torch (its torchvision would pull a CUDA build; tests/microsam_oracle.py)
	$(PIP) install --quiet --no-deps micro_sam==1.8.14 torch_em==0.10.9
	touch $@ $(VENV)/.installed-qt

$(VENV)/.installed-qt: pyproject.toml | $(PY)
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[qt]"
	touch $@

system-deps:
	bash .ci/system-deps.sh

demo: $(VENV)/.installed-qt
	@if [ -n "$$DISPLAY" ] || [ -n "$$WAYLAND_DISPLAY" ]; then \
		$(PY) -m napari_sam._qt.demo; \
	else \
		bash .ci/system-deps.sh && \
		xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) -m napari_sam._qt.demo --screenshot $(SCREENSHOT); \
	fi

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests benchmarks examples

# The widget tests run one file per process: many viewers in one process have crashed
# (a segfault in Qt event processing after ~25 widget tests; see docs/reliability.md).
# With no display the widget tests need Xvfb: its Debian packages are installed when missing.
test: $(VENV)/.installed-dev lint
	@if [ -z "$$DISPLAY" ] && [ -z "$$WAYLAND_DISPLAY" ]; then bash .ci/system-deps.sh; fi
	$(VENV)/bin/pytest --ignore=tests/_qt
	for f in tests/_qt/test_*.py; do $(VENV)/bin/pytest "$$f" || exit 1; done
	$(VENV)/bin/npe2 validate napari-sam --imports

clean:
	rm -rf $(VENV) out dist build .pytest_cache .ruff_cache
