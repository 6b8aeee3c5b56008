# GreenFlow — the Makefile is the contract; CI calls make targets only.
SHELL := /bin/bash
GO ?= go
BIN := bin
# the packages with envtest-tagged tests (a real kube-apiserver and etcd)
KUBE_PKGS := ./pkg/kubetest/... ./pkg/cluster/... ./pkg/testbed/... ./deploy/... ./services/provisioner/internal/kube/... ./services/provisioner/internal/provisioner/... ./services/greenflow/internal/e2ekube/... ./loadtest/chaos/kubeshort/...

.DEFAULT_GOAL := help

.PHONY: help
help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-10s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## fetch Go modules and install clickhouse-server when missing
	@$(GO) mod download
	@./scripts/ensure-clickhouse.sh

# The commit is passed in, not left to Go's VCS stamping, which is off on
# machines with GOFLAGS=-buildvcs=false (pkg/version then falls back to the
# checkout it runs in, or says "unknown"). "+dirty" marks local changes.
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || echo +dirty)
VERSION ?= $(shell git describe --tags 2>/dev/null || echo dev)
LDFLAGS := -X github.com/greenflow/greenflow/pkg/version.commit=$(COMMIT) -X github.com/greenflow/greenflow/pkg/version.Version=$(VERSION)

.PHONY: build
build: ## build every service binary into bin/ (commit and version passed in with -ldflags)
	@mkdir -p $(BIN)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./services/...

.PHONY: images
images: ## build every service image as an OCI tarball in .cache/images (no Docker daemon or registry; BASE=name@sha256:… for a base image)
	$(GO) run ./hack/images -out .cache/images -tag $(VERSION) -ldflags '$(LDFLAGS)' $(if $(BASE),-base $(BASE))

.PHONY: demo
demo: deps build ## start the dev stack, run examples/uc3-local.yaml end to end, print results, stop
	./$(BIN)/greenflow demo -f examples/uc3-local.yaml --state-dir .state/demo

.PHONY: test
test: deps ## every test (with the short chaos suite): real NATS JetStream, kfake Kafka, ClickHouse, headless Chromium, then kube-apiserver + etcd
	@./scripts/ensure-chromium.sh
	$(GO) vet ./...
	$(GO) vet -tags envtest $(KUBE_PKGS)
	$(GO) test -count=1 -timeout 15m ./...
	@$(MAKE) --no-print-directory fuzz-short
	@$(MAKE) --no-print-directory test-kube

# Every Go fuzz target (found by scripts/fuzz.sh, so new ones join without
# editing this file) runs for a short time in `make test` and longer in
# `make fuzz`. Seed corpora live under each package's testdata/fuzz/.
FUZZTIME ?= 1m
FUZZTIME_SHORT ?= 2s

.PHONY: fuzz-short
fuzz-short: ## every fuzz target for FUZZTIME_SHORT (default 2s) each; part of make test
	@GO=$(GO) ./scripts/fuzz.sh $(FUZZTIME_SHORT)

.PHONY: fuzz
fuzz: ## every fuzz target for FUZZTIME (default 1m) each, e.g. make fuzz FUZZTIME=10m
	@GO=$(GO) ./scripts/fuzz.sh $(FUZZTIME)

# The Kubernetes tests need kube-apiserver and etcd, built from the Go module
# proxy once per machine (6 minutes measured from empty caches; cached by version in
# ~/.cache/greenflow/envtest). They run after the other tests, which never
# wait for this build.
.PHONY: test-kube
test-kube: ## the kubernetes backend's tests against a real kube-apiserver and etcd (envtest)
	@assets="$$(./scripts/envtest-assets.sh)" && echo "KUBEBUILDER_ASSETS=$$assets" && \
	KUBEBUILDER_ASSETS="$$assets" $(GO) test -tags envtest -count=1 -timeout 10m $(KUBE_PKGS)

.PHONY: test-race
test-race: deps ## the test suite under the race detector
	$(GO) test -race -count=1 -timeout 30m ./...
	assets="$$(./scripts/envtest-assets.sh)" && KUBEBUILDER_ASSETS="$$assets" $(GO) test -race -tags envtest -count=1 -timeout 10m $(KUBE_PKGS)

.PHONY: lint
lint: ## gofmt and go vet
	@test -z "$$(gofmt -l pkg services schemas loadtest)" || { gofmt -l pkg services schemas loadtest; echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

# The history benchmarks keep their ClickHouse data in .cache/bench-clickhouse:
# the 300 M-row history takes about 5 minutes to generate the first time and
# is reused after (BENCH_HISTORY_ROWS=30000000 for a quicker look). Packages
# run one at a time (-p 1): they share that server directory, and timings
# taken side by side would measure each other.
BENCH_HISTORY_ROWS ?= 300000000

.PHONY: bench
bench: deps ## run the Go benchmarks (codec, aggregation, meters, analysis on a 300 M-row history)
	GREENFLOW_TEST_CLICKHOUSE_DIR=$(CURDIR)/.cache/bench-clickhouse GREENFLOW_BENCH_HISTORY_ROWS=$(BENCH_HISTORY_ROWS) \
	$(GO) test -p 1 -timeout 60m -run '^$$' -bench . -benchmem ./pkg/... ./services/...

.PHONY: bench-dashboards
bench-dashboards: deps ## every Grafana dashboard query on the 300 M-row history; logs the slowest (bound: 200 ms)
	GREENFLOW_TEST_CLICKHOUSE_DIR=$(CURDIR)/.cache/bench-clickhouse GREENFLOW_BENCH_HISTORY_ROWS=$(BENCH_HISTORY_ROWS) \
	$(GO) test -v -timeout 60m -run '^$$' -bench BenchmarkDashboardQueriesAfterHistory -benchtime 3x ./services/analyzer/internal/analyzer/

.PHONY: loadtest
loadtest: deps build ## load tests of the platform itself (loopback only, stop by themselves)
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 3s ./loadtest/...

# CHAOS_FLAGS passes flags to the suite, e.g. CHAOS_FLAGS='-faults services,infra,replicas -seed 42'
# (go run ./loadtest/chaos/cmd/chaos -h lists them).
CHAOS_FLAGS ?=

.PHONY: chaos
chaos: deps ## kill -9 every service in every phase of short runs; check no run ends done with wrong data (loopback, stops by itself)
	$(GO) run ./loadtest/chaos/cmd/chaos $(CHAOS_FLAGS)

.PHONY: clean
clean: ## remove build output and demo state
	rm -rf $(BIN) .state
