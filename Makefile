# cni-flannel — see README.md.  Everything runs as root on a Debian 12 machine.
#
#   make test      install what is missing (apt, venv), build, run every suite
#   make binaries  frozen plugins in dist/cni/ (flannel bridge host-local portmap loopback)
#   make install   DESTDIR=… PLUGINS="flannel" FORCE=1 NATIVE=0 — see packaging/install.sh
#                  (PLUGINS="flannel flanneld" or make install-flanneld: flanneld to /opt/bin)
#   make image     the DaemonSet's container image, dist/cni-flannel-image.tar (OCI archive)
#   make demo | bench | reliability | drivers | deps | clean

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := binaries

SYSTEM_PYTHON := /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.requirements-installed
BUNDLE_STAMP := dist/cni/.cni-flannel/BUILD
NATIVE_STAMP := dist/cni-native/.cni-flannel/BUILD

APT_PACKAGES := golang-go golang-github-appc-cni-dev golang-github-containerd-go-cni-dev \
	containernetworking-plugins iptables nftables iproute2 conntrack debootstrap \
	python3-venv python3-dev python3-yaml binutils gcc libc6-dev hyperfine util-linux \
	etcd-server etcd-client iperf3 tcpdump iputils-ping podman runc

# Everything the frozen binaries are made of.
BUNDLE_INPUTS := $(shell find cni_flannel plugins -name '*.py' 2>/dev/null) \
	packaging/cni-flannel.spec packaging/lazy_rthooks.py packaging/build.sh requirements.txt \
	$(wildcard native/*.c native/*.py native/*.sh)

PLUGINS ?= flannel
DESTDIR ?=
FORCE ?=
NATIVE ?= 1

.PHONY: all deps apt venv binaries drivers test demo install install-flanneld bench reliability clean binaries-native portable-root native image

all: binaries

# --- dependencies -----------------------------------------------------------------------------

deps: apt venv

apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' "$$p" 2>/dev/null | grep -q '^install ok installed$$' || echo "$$p"; \
	done); \
	if [[ -n "$$missing" ]]; then \
		echo "deps: installing" $$missing; \
		apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi
	@# kubectl for the test API server's honesty check: Debian's kubernetes-client, unless a
	@# kubectl is already installed (another package owning /usr/bin/kubectl would conflict).
	@if ! command -v kubectl >/dev/null; then \
		echo "deps: installing kubernetes-client (kubectl)"; \
		apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client; \
	fi

venv: $(VENV_STAMP)

# The venv is made from the system interpreter, never a pyenv shim (which costs ~100 ms a run).
$(VENV_STAMP): requirements.txt requirements-dev.txt | apt
	@if [[ ! -x $(PY) ]] || ! grep -qx 'home = /usr/bin' $(VENV)/pyvenv.cfg; then \
		echo "deps: creating $(VENV) from $(SYSTEM_PYTHON)"; \
		rm -rf $(VENV); $(SYSTEM_PYTHON) -m venv $(VENV); \
	fi
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $@

# --- build ------------------------------------------------------------------------------------

# The shipped binaries are frozen in a Debian bullseye root (glibc 2.31, Python 3.9) so they run
# on older nodes too (packaging/portable/README.md; cold ~2 min, then ~10 s).  `binaries-native`
# freezes with this machine's Python instead (quicker to iterate; needs glibc >= 2.36 to run).
binaries: $(BUNDLE_STAMP)

# (apt: order-only — checked every time, never a reason to rebuild)
$(BUNDLE_STAMP): $(VENV_STAMP) $(BUNDLE_INPUTS) $(wildcard packaging/portable/*.sh) packaging/lib.sh | apt
	bash packaging/portable/build.sh dist/cni

binaries-native: $(NATIVE_STAMP)

$(NATIVE_STAMP): $(VENV_STAMP) $(BUNDLE_INPUTS) | apt
	bash packaging/build.sh dist/cni-native

# The static hand-off client alone (make binaries builds it into every bundle as the entries).
native: build/native/cni-flannel-client

build/native/cni-flannel-client: $(wildcard native/*.c native/*.py native/*.sh) cni_flannel/cni/wire.py \
		cni_flannel/cni/version.py cni_flannel/cni/handoff.py | $(VENV_STAMP)
	bash native/build.sh $@

# A bare bullseye root without Python, where tests/integration/test_portability.py runs the binaries.
portable-root: | apt
	bash packaging/portable/node-root.sh

drivers:
	@if [[ -f tests/drivers/build.sh ]]; then bash tests/drivers/build.sh; \
	else echo "drivers: tests/drivers/build.sh not there yet"; fi

# --- test -------------------------------------------------------------------------------------

# The DaemonSet's image as an OCI archive (packaging/image/build.sh; cold ~4 min for the cached
# bullseye root, then ~25 s).  tests/integration/test_image.py loads it with podman (runc).
IMAGE_TAR := dist/cni-flannel-image.tar

image: $(IMAGE_TAR)

$(IMAGE_TAR): $(BUNDLE_STAMP) packaging/image/build.sh packaging/image/oci.py packaging/install.sh packaging/install-lib.sh packaging/lib.sh | apt
	bash packaging/image/build.sh $(IMAGE_TAR)

test: deps binaries binaries-native portable-root drivers image
	bash packaging/run-tests.sh

demo: deps binaries drivers
	@if [[ -f demo/demo.sh ]]; then bash demo/demo.sh; \
	else echo "demo: demo/demo.sh not written yet"; exit 1; fi

# Fuzzing, crash injection, reboot + GC at full size, ours beside Debian's Go plugins (~40 min);
# one table, saved in reliability/results/latest.md.
reliability: binaries drivers
	CNI_FUZZ_RANDOM=1 $(PY) -m tests.reliability.run

bench: binaries drivers
	@if [[ -f bench/run.sh ]]; then bash bench/run.sh; \
	else echo "bench: bench/run.sh not written yet"; exit 1; fi

# --- install ----------------------------------------------------------------------------------

# Builds only when dist/cni is missing, so installing never rebuilds under a running test
# suite; `make binaries install` to be sure the build is current.
install:
	@[[ -f $(BUNDLE_STAMP) ]] || $(MAKE) --no-print-directory binaries
	$(if $(filter-out flanneld,$(PLUGINS)),DESTDIR="$(DESTDIR)" PLUGINS="$(filter-out flanneld,$(PLUGINS))" FORCE="$(FORCE)" NATIVE="$(NATIVE)" bash packaging/install.sh)
	$(if $(filter flanneld,$(PLUGINS)),DESTDIR="$(DESTDIR)" FORCE="$(FORCE)" sh packaging/install-flanneld.sh)

# flanneld, the node daemon, to $(DESTDIR)/opt/bin/flanneld (where kube-flannel.yml runs it).
install-flanneld:
	@[[ -f $(BUNDLE_STAMP) ]] || $(MAKE) --no-print-directory binaries
	DESTDIR="$(DESTDIR)" FORCE="$(FORCE)" sh packaging/install-flanneld.sh

# ----------------------------------------------------------------------------------------------

# Keeps the cached bullseye roots of packaging/portable (build/bullseye-*): slow to recreate.
clean:
	rm -rf build/pyinstaller build/stage build/native build/.build.lock dist/cni dist/cni.old dist/cni-native tests/drivers/bin
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
