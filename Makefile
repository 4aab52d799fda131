# ovmd: the two commands a newcomer needs are `make demo` and `make test`.
# Each installs what it needs: a virtualenv in .venv with the project and its test
# extras, and the Debian packages below (with apt-get when run as root).

PYTHON3 ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Real peers the tests drive: Debian's xenstore tools, rpmbuild, debootstrap,
# shadow-utils and ssh-keygen.
DEBIAN_PACKAGES := xenstore-utils rpm debootstrap passwd openssh-client tzdata

.PHONY: all test demo debian-deps venv clean

all: test

$(STAMP): setup.py pyproject.toml
	$(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

venv: $(STAMP)

debian-deps:
	@scripts/install-debian-deps $(DEBIAN_PACKAGES)

test: $(STAMP) debian-deps
	$(PY) -m pytest tests

demo: $(STAMP) debian-deps
	$(PY) -m ovmd.demo

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
