# unibus cluster kit. `make specs` is the main job; `make test` is what CI runs.
GO      ?= go
GINKGO  := $(GO) tool ginkgo
OUT     := $(CURDIR)/out
SPECOUT := $(OUT)/specs
# Extra ginkgo flags, e.g. SPECFLAGS='--label-filter=claim:r3 -v'
SPECFLAGS ?=

.PHONY: all build lint unit specs test bench cluster clean

all: build

build:
	$(GO) build -o bin/membershipd ./membershipd
	$(GO) build -o bin/runbook ./runbook

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
	  $(SPECFLAGS) ./specs -- --membershipd=$(CURDIR)/bin/membershipd --report-dir=$(SPECOUT)

test: lint unit specs

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./membershipd/... ./chaos/...

# Three membershipd processes on loopback with fresh certificates; Ctrl-C stops them.
cluster: build
	bin/runbook local-cluster --fresh --dir $(OUT)/cluster --binary bin/membershipd

clean:
	rm -rf $(OUT) bin
