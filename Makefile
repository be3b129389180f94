# unibus cluster kit. `make specs` is the main job; `make test` is what CI runs.
GO      ?= go
GINKGO  := $(GO) tool ginkgo
OUT     := $(CURDIR)/out
SPECOUT := $(OUT)/specs
# Extra ginkgo flags, e.g. SPECFLAGS='--label-filter=claim:r3 -v'
SPECFLAGS ?=
# Cluster size for the local targets, e.g. `make specs SIZE=5` (default 3)
SIZE ?=
# make specs leaves out the slow fault specs (make chaos runs them); the
# quick ones stay, so a fault the target cannot take shows as skipped.
SPECLABELS ?= !(fault && slow)
CHAOSOUT    := $(OUT)/chaos
# make chaos: the fault claims, on the process target by default
CHAOSTARGET ?= process

.PHONY: all build lint unit specs chaos test bench cluster clean vps-sim-up vps-sim-down test-vps specs-live

SIMDIR  ?= /run/unibus-vpssim
SIMOUT  := $(OUT)/vps
NODES   ?= runbook/nodes.env
# Extra ssh flags for runbook commands, e.g. SSHFLAGS='-F ~/.ssh/config'
SSHFLAGS ?=

all: build

build:
	$(GO) build -o bin/membershipd ./membershipd
	$(GO) build -o bin/runbook ./runbook
	$(GO) build -o bin/clientcheck ./clientcheck

lint:
	$(GO) build -o bin/membershipd ./membershipd
	runbook/check-unit.sh bin/membershipd
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$bad" ]; then echo "gofmt needed on:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# Unit tests (everything but the runbook specs), with the race detector.
unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v '/specs$$')

# The runbook suite on three in-process nodes: prints the claim checklist,
# writes out/specs/report.json (Ginkgo JSON), junit.xml and checklist.txt.
specs: build
	@mkdir -p $(SPECOUT)
	$(GINKGO) --json-report=report.json --junit-report=junit.xml --output-dir=$(SPECOUT) \
	  --label-filter='$(SPECLABELS)' $(SPECFLAGS) ./specs -- --membershipd=$(CURDIR)/bin/membershipd --report-dir=$(SPECOUT) $(if $(SIZE),--size=$(SIZE))

# The fault claims (label `fault`: kill -9, pause, partitions) on real
# membershipd processes: out/chaos/report.json, junit.xml, checklist.txt.
chaos: build
	@mkdir -p $(CHAOSOUT)
	$(GINKGO) --json-report=report.json --junit-report=junit.xml --output-dir=$(CHAOSOUT) \
	  --label-filter=fault $(SPECFLAGS) ./specs -- --target=$(CHAOSTARGET) --membershipd=$(CURDIR)/bin/membershipd \
	  --report-dir=$(CHAOSOUT) $(if $(SIZE),--size=$(SIZE))

test: lint unit specs chaos

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./membershipd/... ./chaos/...

# Three membershipd processes on loopback with fresh certificates; Ctrl-C stops them.
cluster: build
	bin/runbook local-cluster --fresh --dir $(OUT)/cluster --binary bin/membershipd

clean:
	rm -rf $(OUT) bin

# --- simulated hosts (root) ------------------------------------------------
vps-sim-up: build
	bin/runbook vps-sim up --dir $(SIMDIR)
	@mkdir -p $(SIMOUT)
	bin/runbook sim-nodes-env --dir $(SIMDIR) > $(SIMOUT)/nodes.env
	@echo "nodes.env for the simulated hosts: $(SIMOUT)/nodes.env (ssh config $(SIMDIR)/ssh_config)"

vps-sim-down: build
	bin/runbook vps-sim down --dir $(SIMDIR)

SIMFLAGS = --nodes $(SIMOUT)/nodes.env --certs $(SIMOUT)/certs -F $(SIMDIR)/ssh_config

# The whole runbook against three simulated hosts: deploy, start, then the
# spec suite on the ssh target with disruption allowed.
test-vps: build
	-bin/runbook vps-sim down --dir $(SIMDIR) >/dev/null 2>&1
	rm -rf $(SIMOUT)
	$(MAKE) vps-sim-up
	bin/runbook certs --nodes $(SIMOUT)/nodes.env --dir $(SIMOUT)/certs
	bin/runbook deploy $(SIMFLAGS)
	bin/runbook deploy --yes $(SIMFLAGS)
	bin/runbook start $(SIMFLAGS)
	bin/runbook verify $(SIMFLAGS)
	$(GINKGO) --json-report=report.json --junit-report=junit.xml --output-dir=$(SIMOUT)/specs \
	  $(SPECFLAGS) ./specs -- --target=ssh --nodes=$(SIMOUT)/nodes.env --certs=$(SIMOUT)/certs \
	  --ssh-config=$(SIMDIR)/ssh_config --allow-disruptive --allow-wipe --sim-dir=$(SIMDIR) \
	  --membershipd=$(CURDIR)/bin/membershipd \
	  --report-dir=$(SIMOUT)/specs; rc=$$?; bin/runbook vps-sim down --dir $(SIMDIR); exit $$rc

# The operator's command: the suite against the live cluster in NODES.
# Disruptive specs are skipped unless SPECFLAGS carries --allow-disruptive
# after the `--`.
specs-live: build
	@mkdir -p $(OUT)/live
	$(GINKGO) --json-report=report.json --junit-report=junit.xml --output-dir=$(OUT)/live \
	  ./specs -- --target=ssh --nodes=$(NODES) --certs=out/certs $(SSHFLAGS) \
	  --membershipd=$(CURDIR)/bin/membershipd --report-dir=$(OUT)/live $(LIVEFLAGS)
