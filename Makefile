# ferry -- local development / CI stack. `make up` installs what is missing and starts everything.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ROOT  := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
LOCAL := $(ROOT)/deploy/local
STACK := $(LOCAL)/stack.sh

.PHONY: help tools up down status logs clean-data

help: ## list the targets (the default: `make` alone starts nothing)
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-zA-Z_-]+):.*## (.*)/  \1\t\2/' | expand -t 24

tools: ## install pinned nats-server, versitygw, nats CLI and Cassandra jars into .local (once)
	@bash $(LOCAL)/tools.sh

up: tools ## start NATS, versitygw and two Cassandra nodes (idempotent)
	@bash $(STACK) up

down: ## stop every service of ours (data kept)
	@bash $(STACK) down

status: ## one line per service; non-zero if any is down
	@bash $(STACK) status

logs: ## print where the logs are
	@bash $(STACK) logs

clean-data: ## stop, then wipe .local/data and .local/logs
	@bash $(STACK) clean-data

.PHONY: cassandra-secure-up cassandra-secure-down
cassandra-secure-up: tools ## a third, separate Cassandra on 127.0.0.3 with TLS and PasswordAuthenticator (tests start it themselves)
	@bash $(LOCAL)/cassandra-secure.sh start

cassandra-secure-down: ## stop it (make down stops it too)
	@bash $(LOCAL)/cassandra-secure.sh stop

# ---- ferry itself ------------------------------------------------------------------------------
GO        ?= go
FERRY     := $(ROOT)/.local/bin/ferry
DEMO_KEYS ?= 5000
TEST_TIMEOUT ?= 60m

.PHONY: build lint test test-unit test-integration demo bench

# ferry version: the commit and its date (not the build's, so the same source builds the same binary).
LDFLAGS := -X main.commit=$(shell git -C $(ROOT) rev-parse --short=12 HEAD 2>/dev/null) -X main.date=$(shell git -C $(ROOT) log -1 --format=%cI 2>/dev/null)

build: ## build .local/bin/ferry
	@mkdir -p $(dir $(FERRY))
	$(GO) build -ldflags "$(LDFLAGS)" -o $(FERRY) .

test-unit: ## unit tests with -race: no services needed (the runner's tests embed a JetStream server)
	$(GO) vet ./...
	cd $(ROOT)/benchmarks && $(GO) vet ./...
	$(GO) test -race -count=1 ./...

test-integration: up ## integration and end-to-end tests against the local stack
	$(GO) vet -tags integration ./...
	source $(LOCAL)/env.sh && $(GO) test -tags integration -count=1 -p 1 -timeout $(TEST_TIMEOUT) ./...

STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(ROOT)/.local/bin/staticcheck-$(STATICCHECK_VERSION)

$(STATICCHECK):
	@mkdir -p $(dir $@)
	GOBIN=$(ROOT)/.local/bin/sc-$(STATICCHECK_VERSION) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@mv $(ROOT)/.local/bin/sc-$(STATICCHECK_VERSION)/staticcheck $@ && rmdir $(ROOT)/.local/bin/sc-$(STATICCHECK_VERSION)

lint: $(STATICCHECK) ## gofmt, go vet (with and without the integration tag) and staticcheck (pinned, installed into .local)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags integration ./...
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags integration ./...

test: lint test-unit test-integration ## everything: what .ci/run runs

demo: up build ## seed $(DEMO_KEYS) blobs, migrate them with `ferry run`, verify, print the summary
	@bash $(LOCAL)/demo.sh $(DEMO_KEYS)

# ---- benchmarks (benchmarks/, a Go module of its own: built from its folder) --------------------
BENCH      := $(ROOT)/.local/bin/ferry-bench
BENCH_SOAK_KEYS ?= 100000,2000000
SUDO       := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: bench bench-scale bench-soak bench-build bench-diff bench-scan browser

browser: ## install Debian's chromium for the console's browser test, if missing
	@command -v chromium >/dev/null || { echo "installing chromium (e2e TestConsole drives it headless)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

bench-build: build ## build .local/bin/ferry-bench (and ferry); install redis-server if missing
	cd $(ROOT)/benchmarks && $(GO) build -o $(BENCH) .
	@command -v redis-server >/dev/null || { echo "installing redis-server (the seed-design variant)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server >/dev/null; }

bench: bench-build ## side by side on the local stack (make up first): BENCH_KEYS=50000 BENCH_CONCURRENCY=64
	@bash $(STACK) status >/dev/null || { echo "the local stack is not up: make up"; exit 1; }
	cd $(ROOT) && source $(LOCAL)/env.sh && $(BENCH) bench

bench-scale: bench-build ## ferry run at 10k and 200k keys, the producer on 10M lines (BENCH_SCALE_KEYS, BENCH_PRODUCER_LINES)
	@bash $(STACK) status >/dev/null || { echo "the local stack is not up: make up"; exit 1; }
	cd $(ROOT) && source $(LOCAL)/env.sh && $(BENCH) scale

bench-soak: bench-build ## ferry run and the split services at 100k and 2M keys of 1 KiB blobs with a DONE drain: cost per file, RSS, NATS store (BENCH_SOAK_KEYS; BENCH_VARIANTS=ferry-run or ferry-split for one)
	@bash $(STACK) status >/dev/null || { echo "the local stack is not up: make up"; exit 1; }
	cd $(ROOT) && source $(LOCAL)/env.sh && BENCH_SOAK_KEYS=$(BENCH_SOAK_KEYS) $(BENCH) soak

bench-diff: build ## ferry diff A B vs LC_ALL=C sort -u + comm on two generated lists (BENCH_DIFF_LINES=20000000; no stack needed)
	cd $(ROOT)/benchmarks && $(GO) build -o $(BENCH) .
	cd $(ROOT) && $(BENCH) diff

bench-scan: build ## ferry producer --scan vs one SELECT on a 1M-row table, a kill/restart, and a delta pass with 1% rewritten (make up first; BENCH_SCAN_ROWS=1000000)
	cd $(ROOT)/benchmarks && $(GO) build -o $(BENCH) .
	@bash $(STACK) status >/dev/null || { echo "the local stack is not up: make up"; exit 1; }
	cd $(ROOT) && source $(LOCAL)/env.sh && $(BENCH) scan

# ---- fault tolerance (e2e/chaos_*_test.go) ------------------------------------------------------
.PHONY: chaos

chaos: up build ## the long fault scenarios (FERRY_CHAOS=1, 30,000+ keys; 30-60 min): kills, outages, bad input
	cd $(ROOT) && source $(LOCAL)/env.sh && FERRY_CHAOS=1 $(GO) test -tags integration -count=1 -run 'TestChaos' -timeout 60m -v ./e2e/

# ---- container image (deploy/image) -------------------------------------------------------------
IMAGE ?= localhost/ferry:dev

.PHONY: image

image: ## build $(IMAGE) with podman, FROM scratch (static ferry, CA bundle, user 65532); installs podman+runc if missing
	@IMAGE=$(IMAGE) bash $(ROOT)/deploy/image/build.sh
