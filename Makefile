# Two entry points do all set-up on a fresh machine: `make test` and `make demo`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: all venv binaries controllers browser helm manifests lint test unit integration demo bench-solver clean-clusters image

all: test

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok and
# kwokctl from Go modules into ~/.cache/phalanx/bin/<version> once; instant afterwards.
binaries:
	bash hack/build-controlplane.sh

# Builds the JobSet, LeaderWorkerSet and training-operator controllers the integration
# tests run (hack/controllers/go.mod) into ~/.cache/phalanx/controllers once.
controllers:
	bash hack/build-controllers.sh

# Debian's Chromium, for the topology map page's headless browser test.
browser:
	bash hack/install-chromium.sh

# helm from its Go module (hack/build-helm.sh), for the chart test and `make manifests`.
helm:
	bash hack/build-helm.sh >/dev/null

# manifests/{crd,deploy,rbac} are rendered from charts/phalanx: edit the chart, then this.
manifests: venv helm
	$(PY) hack/render_manifests.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/yamllint --strict manifests/ .yamllint

# pytest exits 5 when it collected no test: make treats that as failure, as it should.
test: venv binaries controllers browser helm lint
	$(PY) -m pytest $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

integration: venv binaries controllers browser
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

demo: venv binaries
	$(PY) -m benchmarks.demo

clean-clusters: venv
	$(PY) -c "from localcluster.cluster import remove_stale_clusters as r; print(r())"

# The scheduler's container image (Dockerfile). Needs a container engine that can build:
# docker with its daemon running, or podman; CONTAINER_ENGINE=... picks one explicitly.
# Not part of `make test`: the test machines have none.
IMAGE ?= phalanx-scheduler:0.1.0
CONTAINER_ENGINE ?=

image:
	@engine="$(CONTAINER_ENGINE)"; tried=""; \
	if [ -z "$$engine" ]; then \
	  for candidate in docker podman; do \
	    if ! command -v $$candidate >/dev/null 2>&1; then tried="$$tried $$candidate: not installed;"; \
	    elif ! $$candidate info >/dev/null 2>&1; then tried="$$tried $$candidate: installed, but '$$candidate info' fails (no daemon?);"; \
	    else engine=$$candidate; break; fi; \
	  done; \
	fi; \
	if [ -z "$$engine" ]; then \
	  echo "make image: needs a container engine that can build (docker with a running daemon, or podman);$$tried" >&2; \
	  exit 1; \
	fi; \
	echo "$$engine build -t $(IMAGE) ."; \
	$$engine build -t $(IMAGE) .
