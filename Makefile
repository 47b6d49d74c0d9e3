# The commands a user needs. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
# The notebook's own environment: the SageMaker SDK pins conflict with the serving pins.
NB_VENV := .venv-notebook
# The images `make image` builds and the container tests run: VARIANT=cpu (the default)
# builds IMAGE, VARIANT=transformers (torch, for transformer pipelines) TRANSFORMERS_IMAGE.
VARIANT ?= cpu
IMAGE ?= spacy-ner-sagemaker:local
TRANSFORMERS_IMAGE ?= spacy-ner-sagemaker:local-transformers
export IMAGE TRANSFORMERS_IMAGE
# What shellcheck checks: every shell script of the project.
SHELL_SCRIPTS := .ci/run build_and_push.sh $(wildcard scripts/*.sh)

.PHONY: help serve test lint format image audit sbom notebook bench bench-quick profile pins clean

help:
	@echo "make serve   serve the model on port 8080 (in the image when Docker answers, else on the host)"
	@echo "make test    lint, then run every test (both images' too when Docker answers)"
	@echo "make lint    ruff (lint and format check), mypy (types), hadolint and shellcheck"
	@echo "make format  rewrite the Python files as ruff format wants them"
	@echo "make image   build the serving image ($(IMAGE)); VARIANT=transformers: $(TRANSFORMERS_IMAGE)"
	@echo "make audit   known vulnerabilities: every pinned file, and the built images' Debian packages"
	@echo "make sbom    copy the images' CycloneDX bill of materials to dist/sbom/"
	@echo "make notebook  run notebook.ipynb in local mode (no AWS account) into notebook.out.ipynb"
	@echo "make bench   measure serving against in-process spaCy; writes bench/results/"
	@echo "make bench-quick  the small benchmark CI runs; writes bench/results/quick/"
	@echo "make profile where a one-text request's CPU goes, and candidate cuts; docs/how-it-works.md"
	@echo "make pins    recompile the pinned requirement files after editing a *.in file"
	@echo "make clean   remove the virtual environments"

$(VENV)/.installed: requirements-dev.txt container/model-requirements.txt container/pip-requirements.txt scripts/setup-host.sh
	scripts/setup-host.sh
	touch $@

$(NB_VENV)/.installed: requirements-notebook.txt container/pip-requirements.txt container/model-requirements.txt scripts/setup-notebook.sh
	scripts/setup-notebook.sh
	touch $@

# No set-up here: in the image nothing is needed on the host; serve.sh sets up the host
# (make $(VENV)/.installed) only when it serves there.
serve:
	scripts/serve.sh

image:
	VARIANT=$(VARIANT) scripts/build-image.sh "$(if $(filter transformers,$(VARIANT)),$(TRANSFORMERS_IMAGE),$(IMAGE))"

# Docker-dependent tests skip on a laptop without an engine; CI sets CI=true, which
# turns that skip into a failure (tests/conftest.py).
# The audit lets a pin that the vulnerability service does not answer for pass with a
# warning here (a network that reaches only PyPI's simple index), not in `make audit`. A
# failed audit is run once more on images rebuilt with the Debian updates published since
# the day's first build (scripts/build-image.sh, DEBIAN_UPDATES); a second failure stops.
test: $(VENV)/.installed $(NB_VENV)/.installed
	$(MAKE) lint
	if scripts/docker-ready.sh; then $(MAKE) image && $(MAKE) image VARIANT=transformers; fi
	if ! $(MAKE) audit AUDIT_ARGS=--unanswered=warn; then \
		scripts/docker-ready.sh || exit 1; \
		echo "make test: the audit failed; once more, with the images rebuilt on today's Debian updates"; \
		export DEBIAN_UPDATES=$$(date +%s); \
		$(MAKE) image; $(MAKE) image VARIANT=transformers; \
		$(MAKE) audit AUDIT_ARGS=--unanswered=warn; \
	fi
	$(PY) -m pytest

# Settings in pyproject.toml: what is checked, and how.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint container/Dockerfile bench/toolkit/Dockerfile
	$(VENV)/bin/shellcheck --external-sources $(SHELL_SCRIPTS)

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The pins always; the images' Debian packages for each image that is built (when a Docker
# engine answers). AUDIT_ARGS: more flags for scripts/audit.py.
audit: $(VENV)/.installed
	images=(); \
	if ! scripts/docker-ready.sh; then \
		echo "audit: no Docker engine answers: the images' Debian packages are not checked"; \
	else \
		for image in $(IMAGE) $(TRANSFORMERS_IMAGE); do \
			if docker image inspect "$$image" >/dev/null 2>&1; then images+=(--image "$$image"); \
			else echo "audit: $$image is not built (make image): its Debian packages are not checked"; fi; \
		done; \
	fi; \
	$(PY) scripts/audit.py "$${images[@]}" $(AUDIT_ARGS)

# The bill of materials each built image carries (/opt/sbom/bom.cdx.json), copied out.
sbom:
	scripts/sbom.sh dist/sbom $(IMAGE) $(TRANSFORMERS_IMAGE)

notebook: $(NB_VENV)/.installed image
	$(NB_VENV)/bin/papermill notebook.ipynb notebook.out.ipynb -k python3 \
		-p LOCAL_MODE True -p IMAGE_URI "$(IMAGE)"

# Against the images when Docker answers (both built first, as for `test`), else the host.
# BEFORE_IMAGE: an image of an earlier version, for the before/after figures.
bench: $(VENV)/.installed
	if scripts/docker-ready.sh; then $(MAKE) image && $(MAKE) image VARIANT=transformers; fi
	$(PY) bench/bench.py $(if $(BEFORE_IMAGE),--before-image $(BEFORE_IMAGE))

bench-quick: $(VENV)/.installed
	if scripts/docker-ready.sh; then $(MAKE) image; fi
	$(PY) bench/bench.py --quick

# Needs Docker: both run the image (docs/how-it-works.md, "Where a request's CPU goes").
profile: $(VENV)/.installed
	$(MAKE) image
	$(PY) bench/cpu_profile.py
	$(PY) bench/candidates.py

pins:
	scripts/compile-pins.sh

clean:
	rm -rf $(VENV) $(NB_VENV) .pytest_cache notebook.out.ipynb
