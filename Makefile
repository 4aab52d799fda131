# ovmd: the two commands a newcomer needs are `make demo` and `make test`.
# Each installs what it needs: a virtualenv in .venv with the project and its test
# extras, and the Debian packages below (with apt-get when run as root).

PYTHON3 ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Real peers the tests drive: Debian's xenstore tools, rpmbuild, debootstrap,
# shadow-utils and ssh-keygen, groff/man (man pages), systemd-analyze (units) and ip
# (network namespaces for the address reporter).
DEBIAN_PACKAGES := xenstore-utils rpm debootstrap passwd openssh-client openssl tzdata groff-base man-db systemd iproute2

.PHONY: all test lint demo debian-deps venv clean dist install rpm print-version

all: test

$(STAMP): setup.py pyproject.toml
	$(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

venv: $(STAMP)

debian-deps:
	@scripts/install-debian-deps $(DEBIAN_PACKAGES)

# Lint and types first: ruff (pyflakes, pycodestyle, import order) over the code, the
# scripts, the benchmarks and the tests; mypy over the two packages (pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check ovmd templateconfig scripts bench tests
	$(VENV)/bin/mypy

test: lint debian-deps
	$(PY) -m pytest tests

demo: $(STAMP) debian-deps
	$(PY) scripts/demo.py

VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' ovmd/__init__.py)
DIST := dist/ovmd-$(VERSION).tar.gz

print-version:
	@echo $(VERSION)

# The source tarball the RPM builds from: the files git tracks, plus any new ones it
# does not ignore, under ovmd-VERSION/.
dist: $(DIST)
$(DIST): FORCE
	@mkdir -p dist
	git ls-files --cached --others --exclude-standard -z | \
	    tar --null -T - --transform 's,^,ovmd-$(VERSION)/,' -czf $@
	@echo "wrote $@"

# Put files where the RPM puts them (the spec runs the same script).
install:
	DESTDIR=$(DESTDIR) sh scripts/install-tree

# Build the RPMs with rpmbuild (Debian's rpm package works; no Fedora macros needed).
RPMTOP := $(CURDIR)/dist/rpmbuild
rpm: $(DIST)
	@scripts/install-debian-deps rpm
	mkdir -p $(RPMTOP)/SOURCES $(RPMTOP)/SPECS
	cp $(DIST) $(RPMTOP)/SOURCES/
	rpmbuild --define "_topdir $(RPMTOP)" --define "version $(VERSION)" $(RPMBUILD_FLAGS) \
	    -bb packaging/ovmd.spec
	@find $(RPMTOP)/RPMS -name '*.rpm' | sort

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

FORCE:
