# jethook: run the whole system locally, test it, build it.
# Every target works on a fresh machine with only Go installed.

MODULES := shared orders dispatcher notifier
PKGS    := $(MODULES:%=./%/...)
BIN     := bin
GO      ?= go

.PHONY: run test race build lint fuzz chaos bench clean deploy-check natscli

## run: embedded NATS (data in ./.data) + the three services; Ctrl-C stops all
run: build
	$(BIN)/jethook-dev

## test: vet and every test against an embedded nats-server
test:
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 15m $(PKGS)

## race: the services' own tests under the race detector
race:
	$(GO) test -race -count=1 ./orders/... ./dispatcher/... ./notifier/... ./shared/service/... ./shared/metrics/... ./shared/natsx/... ./shared/webhook/... ./shared/event/... ./shared/smtptest/...

## build: the service binaries and the dev runner into ./bin
build:
	$(GO) build -o $(BIN)/ ./orders/cmd/orders ./dispatcher/cmd/dispatcher ./notifier/cmd/notifier ./shared/cmd/jethook-dev ./shared/cmd/jethook-receiver

## lint: formatting and vet
lint:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags natscli ./shared/e2e/

## fuzz: each fuzz target for a bounded time (FUZZTIME, default 30s)
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzVerify -fuzztime=$(FUZZTIME) ./shared/webhook/
	$(GO) test -run='^$$' -fuzz=FuzzMiddleware -fuzztime=$(FUZZTIME) ./shared/webhook/
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=$(FUZZTIME) ./shared/event/
	$(GO) test -run='^$$' -fuzz=FuzzParseRequest -fuzztime=$(FUZZTIME) ./orders/internal/order/
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=$(FUZZTIME) ./dispatcher/internal/subscription/

## chaos: the chaos harness, two replicas of dispatcher and notifier (CHAOS_SEED, CHAOS_DURATION=2m, CHAOS_RATE=5, CHAOS_FAULTS); see docs/RELIABILITY.md
chaos:
	$(GO) run ./shared/cmd/jethook-chaos

## bench: the benchmark table (BENCH_FLAGS, such as -smtp-latency 20ms); see docs/BENCHMARKS.md
BENCH_FLAGS ?=
bench:
	$(GO) run ./shared/cmd/jethook-bench $(BENCH_FLAGS)

## deploy-check: NATS configs (nats-server -t) and compose files; no Docker engine needed
deploy-check:
	$(GO) build -o $(BIN)/nats-server github.com/nats-io/nats-server/v2
	for c in deploy/nats/single.conf deploy/nats/cluster/nats-1.conf deploy/nats/cluster/nats-2.conf deploy/nats/cluster/nats-3.conf; do $(BIN)/nats-server -c $$c -t || exit 1; done
	docker-compose -f docker-compose.yml config -q
	docker-compose -f docker-compose.yml -f deploy/docker-compose.cluster.yml config -q

## natscli: the README's nats CLI views, checked with the real CLI
NATSCLI_VERSION ?= v0.5.0
natscli:
	$(GO) install github.com/nats-io/natscli/nats@$(NATSCLI_VERSION)
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" $(GO) test -tags natscli -run TestNATSCLI -count=1 ./shared/e2e/

clean:
	rm -rf $(BIN)
