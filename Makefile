# jethook: run the whole system locally, test it, build it.
# Every target works on a fresh machine with only Go installed.

MODULES := shared orders dispatcher notifier
PKGS    := $(MODULES:%=./%/...)
BIN     := bin
GO      ?= go

.PHONY: run test build lint fuzz clean

## run: embedded NATS (data in ./.data) + the three services; Ctrl-C stops all
run: build
	$(BIN)/jethook-dev

## test: vet and every test against an embedded nats-server
test:
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 15m $(PKGS)

## build: the service binaries and the dev runner into ./bin
build:
	$(GO) build -o $(BIN)/ ./orders/cmd/orders ./dispatcher/cmd/dispatcher ./notifier/cmd/notifier ./shared/cmd/jethook-dev

## lint: formatting and vet
lint:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

## fuzz: each fuzz target for a bounded time (FUZZTIME, default 30s)
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzVerify -fuzztime=$(FUZZTIME) ./shared/webhook/
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=$(FUZZTIME) ./shared/event/
	$(GO) test -run='^$$' -fuzz=FuzzParseRequest -fuzztime=$(FUZZTIME) ./orders/internal/order/

clean:
	rm -rf $(BIN)
