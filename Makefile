# unibus cluster kit. `make specs` is the main job; `make test` is what CI runs.
GO      ?= go
GINKGO  := $(GO) tool ginkgo
OUT     := $(CURDIR)/out
SPECOUT := $(OUT)/specs
# bash: SPECFLAGS is split into an array (see ginkgo_flags).
SHELL   := /bin/bash

# Extra Ginkgo CLI flags for specs, specs-live and test-vps, each as
# --flag=value, e.g. SPECFLAGS='--label-filter=claim:r3 -v'. A label filter
# may hold blanks: SPECFLAGS='--label-filter=claim:quorum-start || claim:r3'.
SPECFLAGS ?=
# Cluster size for the local targets, e.g. `make specs SIZE=5` (default 3)
SIZE ?=
export SPECFLAGS
# make specs leaves out the slow fault specs (make chaos runs them); the
# quick ones stay, so a fault the target cannot take shows as skipped. A
# --label-filter in SPECFLAGS comes later and wins.
SPECLABELS ?= !(fault && slow)
CHAOSOUT    := $(OUT)/chaos
# make chaos: the fault claims, on the process target by default
CHAOSTARGET ?= process

# ginkgo_flags puts SPECFLAGS into the bash array gflags: a new flag starts at
# each blank followed by '-', so a filter's `||` and `&&` stay in its value
# (and never reach the shell); one layer of quotes around a value is dropped.
ginkgo_flags = readarray -t gflags < <(printf '%s\n' "$$SPECFLAGS" \
  | sed -E 's/[[:space:]]+-/\n-/g' \
  | sed -E "s/^[[:space:]]+//; s/[[:space:]]+$$//; s/^(-[^=]*=)'(.*)'$$/\1\2/; s/^(-[^=]*=)\"(.*)\"$$/\1\2/; /^$$/d")

.PHONY: all build lint unit specs chaos test bench bench-micro fuzz cluster clean vps-sim-up vps-sim-down test-vps specs-live nemesis nemesis-vps

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
	@$(ginkgo_flags); set -x; \
	$(GINKGO) --json-report=report.json --junit-report=junit.xml --output-dir=$(SPECOUT) \
	  --label-filter='$(SPECLABELS)' "$${gflags[@]}" ./specs -- --membershipd=$(CURDIR)/bin/membershipd --report-dir=$(SPECOUT) $(if $(SIZE),--size=$(SIZE))

# The fault claims (label `fault`: kill -9, pause, partitions) on real
# membershipd processes: out/chaos/report.json, junit.xml, checklist.txt.
chaos: build
	@mkdir -p $(CHAOSOUT)
	@$(ginkgo_flags); set -x; \
	$(GINKGO) --json-report=report.json --junit-report=junit.xml --output-dir=$(CHAOSOUT) \
	  --label-filter=fault "$${gflags[@]}" ./specs -- --target=$(CHAOSTARGET) --membershipd=$(CURDIR)/bin/membershipd \
	  --report-dir=$(CHAOSOUT) $(if $(SIZE),--size=$(SIZE))

test: lint unit specs chaos

# Every claim alone (--label-filter=claim:<id>): each must pass by itself,
# as `ginkgo --label-filter=claim:<id>` is how one claim is run. CI runs it.
# JOBS=2 runs two claims at a time (CI).
.PHONY: specs-each
JOBS ?= 1
specs-each: build
	JOBS=$(JOBS) specs/each-claim.sh

# One table, membershipd next to a plain nats-server cluster, both started
# in this run: printed, and written to out/bench/bench.json + bench.svg.
# `make bench BENCHTIME=short` is a smoke check with small workloads;
# BENCHFLAGS=-cpuprofile also writes CPU profiles (cpu-membershipd.pprof,
# cpu-plain.pprof: each cluster's pub-recv + throughput workloads) into out/bench.
# BENCHFLAGS='-rows quorum-s' runs only the workloads behind those rows
# (comma-separated names); the other rows stay null.
BENCHTIME  ?=
BENCHFLAGS ?=
bench:
	$(GO) build -o bin/membershipd ./membershipd
	$(GO) build -o bin/nats-server github.com/nats-io/nats-server/v2
	$(GO) run ./chaos/bench/cmd/bench -membershipd bin/membershipd -nats-server bin/nats-server \
	  -out $(OUT)/bench $(if $(filter short,$(BENCHTIME)),-short) $(BENCHFLAGS)

# The per-row micro-benchmarks (raw `go test -bench` lines).
bench-micro:
	$(GO) test -run='^$$' -bench=. -benchmem ./membershipd/... ./chaos/...

# Every Go fuzz target in turn, FUZZTIME each (CI: 10s). A crash fails
# and its input is saved under the package's testdata/fuzz/.
FUZZTIME ?= 30s
fuzz:
	.ci/fuzz $(FUZZTIME)

# Three membershipd processes on loopback with fresh certificates; Ctrl-C stops them.
cluster: build
	bin/runbook local-cluster --fresh --dir $(OUT)/cluster --binary bin/membershipd

clean:
	rm -rf $(OUT) bin

# --- the operator's live run -------------------------------------------------
# make specs-live NODES=runbook/nodes.env [CERTS=out/certs] [SSH_CONFIG=FILE]
#                 [LIVEFLAGS='--allow-disruptive'] [SPECFLAGS='--label-filter=claim:r3']
#                 [LIVEOUT=out/live]
# The suite against the deployed cluster in NODES over SSH. Paths may be
# relative to the repository root (they are made absolute here: Ginkgo runs
# the suite inside specs/). SSH_CONFIG is the ssh_config the aliases in
# NODES resolve through (default ~/.ssh/config), the file runbook commands
# take as -F. LIVEFLAGS are suite flags (after the `--`): --allow-disruptive
# runs the specs that stop nodes. SPECFLAGS are Ginkgo flags (before it).
NODES      ?= runbook/nodes.env
CERTS      ?= out/certs
SSH_CONFIG ?=
LIVEFLAGS  ?=
LIVEOUT    ?= out/live
# ~/ is the home directory even where the shell left it unexpanded.
absfile = $(abspath $(patsubst ~/%,$(HOME)/%,$(1)))

ifneq ($(SSHFLAGS),)
$(error SSHFLAGS is not read: give the ssh config as SSH_CONFIG=FILE and suite flags as LIVEFLAGS='...' (see README))
endif

specs-live: build
	@mkdir -p $(call absfile,$(LIVEOUT))
	@$(ginkgo_flags); set -x; \
	$(GINKGO) --json-report=report.json --junit-report=junit.xml --output-dir=$(call absfile,$(LIVEOUT)) \
	  "$${gflags[@]}" ./specs -- --target=ssh --nodes=$(call absfile,$(NODES)) --certs=$(call absfile,$(CERTS)) \
	  $(if $(SSH_CONFIG),--ssh-config=$(call absfile,$(SSH_CONFIG))) \
	  --membershipd=$(CURDIR)/bin/membershipd --report-dir=$(call absfile,$(LIVEOUT)) $(LIVEFLAGS)

# --- simulated hosts (root) ----------------------------------------------------
SIMDIR  ?= /run/unibus-vpssim
SIMOUT  := $(OUT)/vps
# What test-vps hands the runbook and specs-live, as an operator would:
# paths relative to the repository root, the sim's own ssh config.
SIM_NODES      := out/vps/nodes.env
SIM_CERTS      := out/vps/certs
SIM_SSH_CONFIG := $(SIMDIR)/ssh_config
SIMFLAGS = --nodes $(SIM_NODES) --certs $(SIM_CERTS) -F $(SIM_SSH_CONFIG)

vps-sim-up: build
	bin/runbook vps-sim up --dir $(SIMDIR)
	@mkdir -p $(SIMOUT)
	bin/runbook sim-nodes-env --dir $(SIMDIR) > $(SIMOUT)/nodes.env
	@echo "nodes.env for the simulated hosts: $(SIM_NODES) (ssh config $(SIM_SSH_CONFIG)); e.g."
	@echo "  bin/runbook certs --nodes $(SIM_NODES) --dir $(SIM_CERTS)"
	@echo "  bin/runbook deploy --yes $(SIMFLAGS)"
	@echo "  make specs-live NODES=$(SIM_NODES) CERTS=$(SIM_CERTS) SSH_CONFIG=$(SIM_SSH_CONFIG)"

vps-sim-down: build
	bin/runbook vps-sim down --dir $(SIMDIR)

# The whole runbook against three simulated hosts, as README tells the
# operator: deploy (dry run, then --yes), start, verify, then
#   -. every remote fault heals itself when the controller vanishes (the
#      lease test: kill, pause and a partition with a 10 s lease, the SSH
#      connections dropped without healing);
#   0. the operator's read-only live run: `make specs-live` as documented, no
#      LIVEFLAGS (reports in out/vps/readonly; claim:live-readonly proves it
#      changed nothing);
#   1. the operator's disruptive live run: LIVEFLAGS=--allow-disruptive
#      (reports in out/vps/live; claim:live-restore);
#   2. what only the sim may do (reports in out/vps/sim): the specs labelled
#      `wipe` (they need a fresh cluster: --allow-wipe deletes every node's
#      data) or `partition` (iptables in the hosts' namespaces: --sim-dir).
# A label filter in SPECFLAGS applies to both runs. The sim is brought down
# at the end, also on failure or Ctrl-C; the exit status is 1 if any step or
# either run failed.
SIM_ONLY := wipe || partition
test-vps: build
	-bin/runbook vps-sim down --dir $(SIMDIR) >/dev/null 2>&1
	rm -rf $(SIMOUT)
	@trap 'bin/runbook vps-sim down --dir $(SIMDIR)' EXIT; trap 'exit 130' INT TERM; \
	set -x; \
	$(MAKE) --no-print-directory vps-sim-up && \
	bin/runbook certs --nodes $(SIM_NODES) --dir $(SIM_CERTS) && \
	bin/runbook deploy $(SIMFLAGS) && \
	bin/runbook deploy --yes $(SIMFLAGS) && \
	bin/runbook start $(SIMFLAGS) && \
	bin/runbook verify $(SIMFLAGS) || exit 1; \
	rc=0; start=$$SECONDS; \
	UNIBUS_FAULT_NODES=$(CURDIR)/$(SIM_NODES) UNIBUS_FAULT_CERTS=$(CURDIR)/$(SIM_CERTS) UNIBUS_FAULT_SSH_CONFIG=$(SIM_SSH_CONFIG) \
	  $(GO) test -count=1 -run TestLeaseHealsWithoutController ./chaos/sshtarget || rc=1; \
	lease=$$((SECONDS-start)); start=$$SECONDS; \
	$(MAKE) --no-print-directory specs-live NODES=$(SIM_NODES) CERTS=$(SIM_CERTS) SSH_CONFIG=$(SIM_SSH_CONFIG) \
	  LIVEOUT=out/vps/readonly || rc=1; \
	ro=$$((SECONDS-start)); start=$$SECONDS; \
	$(MAKE) --no-print-directory specs-live NODES=$(SIM_NODES) CERTS=$(SIM_CERTS) SSH_CONFIG=$(SIM_SSH_CONFIG) \
	  LIVEFLAGS=--allow-disruptive LIVEOUT=out/vps/live || rc=1; \
	live=$$((SECONDS-start)); start=$$SECONDS; \
	{ set +x; } 2>/dev/null; $(ginkgo_flags); rest=(); lf=""; \
	for f in "$${gflags[@]}"; do case $$f in --label-filter=*) lf=$${f#--label-filter=};; *) rest+=("$$f");; esac; done; \
	only='$(SIM_ONLY)'; [ -z "$$lf" ] || only="($$lf) && ($$only)"; set -x; \
	$(MAKE) --no-print-directory specs-live NODES=$(SIM_NODES) CERTS=$(SIM_CERTS) SSH_CONFIG=$(SIM_SSH_CONFIG) \
	  LIVEFLAGS='--allow-disruptive --allow-wipe --sim-dir=$(SIMDIR)' LIVEOUT=out/vps/sim \
	  SPECFLAGS="$${rest[*]} --label-filter=$$only" || rc=1; \
	{ set +x; } 2>/dev/null; \
	[ $$rc = 0 ] || specs/failed-specs.sh $(SIMOUT)/*/junit.xml; \
	echo "test-vps: fault leases heal without the controller $${lease}s, read-only live run $${ro}s (out/vps/readonly), operator's disruptive live run $${live}s (out/vps/live), sim-only specs $$((SECONDS-start))s (out/vps/sim); exit $$rc"; \
	exit $$rc

# --- nemesis ------------------------------------------------------------------
# A seeded random fault schedule against a cluster while workloads record
# history.jsonl; writes out/nemesis/<timestamp>-<seed>/.
# Every variable is optional: SEED (random, printed), DURATION (5m),
# FAULTS (every fault the target can take), TARGET (process or ssh),
# REPLAY=out/nemesis/<run>/schedule.json, SYNC (serve --sync: default is the
# negative control). Exit 0 green, 1 red, 2 bad input, 3 invalid run.
# TARGET=ssh runs it against the deployed cluster, with the live run's
# variables: NODES, CERTS, SSH_CONFIG and LIVEFLAGS, which must hold
# --allow-disruptive (the opt-in; every fault carries a lease and heals
# itself if the controller vanishes; every user the run added is revoked
# at the end), e.g.
#   make nemesis TARGET=ssh NODES=runbook/nodes.env CERTS=out/certs \
#                SSH_CONFIG=~/.ssh/config LIVEFLAGS=--allow-disruptive DURATION=60s
SEED     ?=
DURATION ?= 5m
FAULTS   ?=
TARGET   ?= process
REPLAY   ?=
SYNC     ?=
nemesis:
	$(GO) build -o bin/membershipd ./membershipd
	$(GO) build -o bin/nemesis ./chaos/nemesis/cmd/nemesis
	bin/nemesis --membershipd=bin/membershipd --out=$(OUT)/nemesis --duration=$(DURATION) --target=$(TARGET) \
	  $(if $(SEED),--seed=$(SEED)) $(if $(FAULTS),--faults=$(FAULTS)) $(if $(REPLAY),--replay=$(REPLAY)) $(if $(SYNC),--sync=$(SYNC)) \
	  $(if $(filter ssh,$(TARGET)),--nodes=$(call absfile,$(NODES)) --certs=$(call absfile,$(CERTS)) \
	    $(if $(SSH_CONFIG),--ssh-config=$(call absfile,$(SSH_CONFIG))) $(LIVEFLAGS))

# A short nemesis on the simulated hosts (root; machine-wide: one user at a
# time): the sim up, the runbook's deploy/start/verify as test-vps does
# them, `make nemesis TARGET=ssh` with --allow-disruptive and the sim's
# --sim-dir (DURATION 60s and SEED 1 unless given), the sim down again, also
# on failure or Ctrl-C. Wipes out/vps; the run goes to out/nemesis.
nemesis-vps: build
	-bin/runbook vps-sim down --dir $(SIMDIR) >/dev/null 2>&1
	rm -rf $(SIMOUT)
	@trap 'bin/runbook vps-sim down --dir $(SIMDIR)' EXIT; trap 'exit 130' INT TERM; \
	set -x; \
	$(MAKE) --no-print-directory vps-sim-up && \
	bin/runbook certs --nodes $(SIM_NODES) --dir $(SIM_CERTS) && \
	bin/runbook deploy --yes $(SIMFLAGS) && \
	bin/runbook start $(SIMFLAGS) && \
	bin/runbook verify $(SIMFLAGS) || exit 1; \
	$(MAKE) --no-print-directory nemesis TARGET=ssh NODES=$(SIM_NODES) CERTS=$(SIM_CERTS) SSH_CONFIG=$(SIM_SSH_CONFIG) \
	  LIVEFLAGS='--allow-disruptive --sim-dir=$(SIMDIR)' DURATION=$(if $(filter command line,$(origin DURATION)),$(DURATION),60s) \
	  SEED=$(or $(SEED),1)
