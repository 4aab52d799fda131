# ovmd: the two commands a newcomer needs are `make demo` and `make test`.
# Each installs what it needs: a virtualenv in .venv with the project and its test
# extras, and the Debian packages below (with apt-get when run as root).

PYTHON3 ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Real peers the tests drive: Debian's xenstore tools, rpmbuild, debootstrap,
# shadow-utils and ssh-keygen, groff/man (man pages) and systemd-analyze (units);
# dpkg-buildpackage with debhelper and dh-python, and lintian (the .deb packages);
# systemd-nspawn, ip, dnsmasq (DHCP), ssh and sshpass (the booted Debian guest; ip also
# makes the network namespaces of the address reporter's tests); the
# validators of what the modules write: sshd -t, chronyd -p, ifup --no-act,
# netplan generate, nmcli --offline, nft -c (scripts/install-debian-deps keeps apt-get
# from starting the services these packages bring).
DEBIAN_PACKAGES := xenstore-utils rpm debootstrap passwd openssh-client openssl tzdata groff-base man-db systemd \
	dpkg-dev debhelper dh-python lintian fakeroot \
	systemd-container iproute2 dnsmasq-base sshpass openssh-server \
	chrony ifupdown netplan.io network-manager nftables

.PHONY: all test lint demo debian-deps venv clean dist install rpm deb print-version

all: test

# The project is installed editable: a .pth line naming this tree (setup.py says why it
# is not setuptools' import hook), so the scripts and template.d/ work from the tree.
$(STAMP): setup.py pyproject.toml
	$(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
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

# DEMO_FLAGS: options of scripts/demo.py, e.g. --keep (keep the sandbox to look at)
demo: $(STAMP) debian-deps
	$(PY) scripts/demo.py $(DEMO_FLAGS)

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

# Put files where the RPM puts them (the spec runs the same script). The Python
# packages go where the target python3 searches (scripts/python-sitelib.py: Debian's
# /usr/lib/python3/dist-packages, EL's site-packages); SITELIB=DIR overrides it.
install:
	DESTDIR=$(DESTDIR) $(if $(SITELIB),SITELIB=$(SITELIB)) sh scripts/install-tree

# Build the RPMs with rpmbuild (Debian's rpm package works; no Fedora macros needed).
RPMTOP := $(CURDIR)/dist/rpmbuild
rpm: $(DIST)
	@scripts/install-debian-deps rpm
	mkdir -p $(RPMTOP)/SOURCES $(RPMTOP)/SPECS
	cp $(DIST) $(RPMTOP)/SOURCES/
	rpmbuild --define "_topdir $(RPMTOP)" --define "version $(VERSION)" $(RPMBUILD_FLAGS) \
	    -bb packaging/ovmd.spec
	@find $(RPMTOP)/RPMS -name '*.rpm' | sort

# Build the Debian packages with dpkg-buildpackage (debhelper, dh-python) from a copy of
# the tree with packaging/debian made into debian/ (scripts/debian-tree); the .deb
# files land in DEBTOP.
DEBTOP := $(CURDIR)/dist/deb
deb:
	@scripts/install-debian-deps dpkg-dev debhelper dh-python python3
	rm -rf $(DEBTOP)/ovmd-$(VERSION)
	mkdir -p $(DEBTOP)/ovmd-$(VERSION)
	git ls-files --cached --others --exclude-standard -z | \
	    tar --null -T - -cf - | tar -xf - -C $(DEBTOP)/ovmd-$(VERSION)
	sh scripts/debian-tree $(DEBTOP)/ovmd-$(VERSION)
	cd $(DEBTOP)/ovmd-$(VERSION) && dpkg-buildpackage -b -us -uc $(DPKG_BUILDPACKAGE_FLAGS)
	@find $(DEBTOP) -maxdepth 1 -name '*.deb' | sort

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

FORCE:
