# See https://tech.davis-hansson.com/p/make/
SHELL := bash
.DELETE_ON_ERROR:
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := all
MAKEFLAGS += --warn-undefined-variables
MAKEFLAGS += --no-builtin-rules

BUF := tools/node_modules/.bin/buf
# Installed by npm ci --prefix web; npm writes this file last.
WEB_DEPS := web/node_modules/.package-lock.json
# make run listens on loopback only; ADDR=:8080 listens on every interface.
ADDR ?= 127.0.0.1:8080
FUZZTIME ?= 30s

.PHONY: help
help: ## Describe useful make targets
	@grep -E '^[a-zA-Z_-]+:.*?## .*$$' $(MAKEFILE_LIST) | sort | awk 'BEGIN {FS = ":.*?## "}; {printf "%-16s %s\n", $$1, $$2}'

.PHONY: all
all: test lint ## Test and lint

.PHONY: run
run: ## Run the bridge with the embedded demo backend on $(ADDR)
	go run ./cmd/bridge -demo -addr $(ADDR)

.PHONY: build
build: ## Build all packages and binaries
	go build ./...

# Release binaries: static (CGO_ENABLED=0), and reproducible: the same
# commit and Go toolchain give byte-identical files, whatever the checkout's
# path (-trimpath), the build cache or the machine. -buildid= drops the
# build id (a hash the linker would otherwise stamp), -s -w the symbol table
# and DWARF, and the GOAMD64/GOARM64 levels are pinned so that the
# environment cannot change the code. VCS stamping follows GOFLAGS: by
# default (-buildvcs=auto) a build in a git checkout records the commit,
# its time and whether the tree was modified, which `bridge -version`
# prints and which are the same for every build of that commit; release from
# a clean checkout of the tag. With -buildvcs=false (CI sets it) the binary
# says "revision unknown" and is just as reproducible.
DIST_PLATFORMS ?= linux/amd64 linux/arm64 darwin/arm64
# The platform that dist-check builds a second time, from an empty cache.
DIST_CHECK_PLATFORM ?= linux/amd64
# dist-build builds cmd/bridge for the GOOS/GOARCH $(1) as $(2)/bridge-GOOS-GOARCH.
dist-build = CGO_ENABLED=0 GOOS=$(firstword $(subst /, ,$(1))) GOARCH=$(lastword $(subst /, ,$(1))) GOAMD64=v1 GOARM64=v8.0 \
	go build -trimpath -ldflags='-s -w -buildid=' -o $(2)/bridge-$(subst /,-,$(1)) ./cmd/bridge

.PHONY: dist
dist: ## Cross-build static, reproducible bridge binaries (linux/amd64, linux/arm64, darwin/arm64) into dist/, with SHA256SUMS
	rm -rf dist
	$(foreach p,$(DIST_PLATFORMS),$(call dist-build,$(p),dist);)
	cd dist && sha256sum bridge-* > SHA256SUMS
	cat dist/SHA256SUMS

.PHONY: dist-check
dist-check: dist ## make dist, then rebuild linux/amd64 from an empty build cache (a few minutes) and fail unless it is byte-identical
	rm -rf .tmp/dist-check
	GOCACHE=$(CURDIR)/.tmp/dist-check/gocache $(call dist-build,$(DIST_CHECK_PLATFORM),.tmp/dist-check)
	cd .tmp/dist-check && grep ' bridge-$(subst /,-,$(DIST_CHECK_PLATFORM))$$' ../../dist/SHA256SUMS | sha256sum -c - \
		|| { echo "make dist is not reproducible: bridge-$(subst /,-,$(DIST_CHECK_PLATFORM)) differs between two builds"; exit 1; }
	rm -rf .tmp/dist-check
	@host=dist/bridge-$$(go env GOHOSTOS)-$$(go env GOHOSTARCH); if [ -x $$host ]; then \
		out=$$($$host -version); echo "$$host -version: $$out"; \
		case "$$out" in "bridge "*" (revision "*) ;; *) echo "unexpected -version output"; exit 1 ;; esac; \
	fi

.PHONY: test
test: ## Vet, then run all tests with the race detector (browser tests in e2e/ need /usr/bin/chromium)
	go vet ./...
	go test -race -count=1 ./...
	go test -run '^$$' -fuzz '^FuzzDecodeControl$$' -fuzztime 5s ./bridge
	go test -run '^$$' -fuzz '^FuzzNormalizeOrigin$$' -fuzztime 5s ./bridge
	go test -run '^$$' -fuzz '^FuzzClientIP$$' -fuzztime 5s ./bridge
	go test -run '^$$' -fuzz '^FuzzQueryParser$$' -fuzztime 5s ./bridge
	go test -run '^$$' -fuzz '^FuzzDecodeSessionFrame$$' -fuzztime 5s ./bridge
	go test -run '^$$' -fuzz '^FuzzAppendJSON$$' -fuzztime 5s ./internal/wirejson

.PHONY: slowtest
slowtest: ## Run the tests without the race detector, verbose
	go test -count=1 -v ./...

.PHONY: fuzz
fuzz: ## Fuzz every decoder of untrusted input (every Fuzz target of every package) for $(FUZZTIME) each
	@for file in $$(grep -rl --include='*_test.go' --exclude-dir=node_modules --exclude-dir=.tmp '^func Fuzz' .); do \
		pkg=$$(dirname $$file); \
		for target in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$file | cut -d' ' -f2); do \
			echo "fuzz $$pkg $$target"; \
			go test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

SOAK ?= 60s
.PHONY: soak
soak: ## Soak a bridge process with 5,000 SSE and 1,000 WebSocket clients for $(SOAK) (make test runs a short one)
	SOAK_REPORT=$${SOAK_REPORT:-} go test ./reliability -run '^TestSoak$$' -soak=$(SOAK) -count=1 -v -timeout 30m

.PHONY: bench
bench: ## Benchmark the bridge against direct gRPC and grpc-gateway, idle streams (HTTP/1.1, gzip, h2c, a burst), fan-out (HTTP/1.1, h2c) and 100 calls on one session (WebSocket, HTTP fallback) vs separate connections (about 7 minutes; docs/benchmarks.md)
	@mkdir -p .tmp/bench
	go build -o .tmp/bin/bench ./cmd/bench
	.tmp/bin/bench -profile .tmp/bench | tee .tmp/bench/report.md

# The peers of make bench-peers, built outside the bridge's go.mod at
# pinned versions: Centrifugo with go install (its own module graph), the
# vanguard proxy from its own module in cmd/bench/peers/vanguard.
PEERS_BIN := $(CURDIR)/.tmp/peers/bin
CENTRIFUGO_VERSION := v6.9.1

.PHONY: bench-peers
bench-peers: ## Benchmark the bridge against Centrifugo and a connectrpc vanguard proxy, side by side (builds them first; about 6 minutes; docs/benchmarks.md)
	@mkdir -p .tmp/bench $(PEERS_BIN)
	@if [ ! -x $(PEERS_BIN)/centrifugo-$(CENTRIFUGO_VERSION) ]; then \
		echo "building Centrifugo $(CENTRIFUGO_VERSION) (go install; a few minutes the first time)"; \
		tmp=$$(mktemp -d) && GOBIN=$$tmp GOFLAGS=-buildvcs=false go install github.com/centrifugal/centrifugo/v6@$(CENTRIFUGO_VERSION) \
			&& mv $$tmp/centrifugo $(PEERS_BIN)/centrifugo-$(CENTRIFUGO_VERSION) && rmdir $$tmp \
			|| { echo "bench-peers: building Centrifugo failed; the report goes on without it"; rm -rf $$tmp; }; \
	fi
	cd cmd/bench/peers/vanguard && go build -o $(PEERS_BIN)/vanguard .
	go build -o .tmp/bin/bench ./cmd/bench
	.tmp/bin/bench -scenarios peers -profile '' -fanout-rounds 3 -vanguard $(PEERS_BIN)/vanguard \
		$$([ -x $(PEERS_BIN)/centrifugo-$(CENTRIFUGO_VERSION) ] && echo -centrifugo $(PEERS_BIN)/centrifugo-$(CENTRIFUGO_VERSION)) \
		| tee .tmp/bench/peers.md

.PHONY: bench-quick
bench-quick: ## Smoke-test the benchmark harness with small counts (about 2 minutes)
	go build -o .tmp/bin/bench ./cmd/bench
	.tmp/bin/bench -quick -profile ''

# The production rehearsal (reliability/rehearsal, docs/reliability.md):
# nginx or HAProxy, three bridge processes, two demo backends and Toxiproxy,
# under load while a script restarts, kills and degrades them. It needs
# nginx and haproxy (Debian packages), unshare and root: the test binary
# runs in network, mount and PID namespaces of its own (loopback only, its
# own hosts file, every process gone when it exits).
REHEARSAL_DIR := .tmp/rehearsal
REHEARSAL_BIN := $(CURDIR)/$(REHEARSAL_DIR)/bin
TOXIPROXY_VERSION := v2.5.0
INGRESS ?= nginx
# rehearsal-run runs the rehearsal of size $(1) behind ingress $(2) within $(3).
rehearsal-run = cd reliability/rehearsal && ulimit -n $$(ulimit -Hn) && \
	unshare --net --mount --pid --fork --kill-child --mount-proc \
	env REHEARSAL_NAMESPACE=1 $(REHEARSAL_BIN)/rehearsal.test -test.run '^TestRehearsal$$' -test.v -test.timeout $(3) \
	-rehearsal $(1) -ingress $(2) -bin $(REHEARSAL_BIN) -out $(CURDIR)/$(REHEARSAL_DIR)

.PHONY: rehearsal-bin
rehearsal-bin: ## Build the rehearsal's binaries, and install the Toxiproxy server ($(TOXIPROXY_VERSION)) beside them, outside go.mod
	mkdir -p $(REHEARSAL_BIN)
	go build -o $(REHEARSAL_BIN)/bridge ./cmd/bridge
	go build -o $(REHEARSAL_BIN)/demo ./cmd/demo
	go test -c -o $(REHEARSAL_BIN)/rehearsal.test ./reliability/rehearsal
	@if ! go version -m $(REHEARSAL_BIN)/toxiproxy-server 2>/dev/null | grep -q 'mod.*toxiproxy/v2.*$(TOXIPROXY_VERSION)'; then \
		echo "go install github.com/Shopify/toxiproxy/v2/cmd/server@$(TOXIPROXY_VERSION)"; \
		GOBIN=$(REHEARSAL_BIN)/toxiproxy go install github.com/Shopify/toxiproxy/v2/cmd/server@$(TOXIPROXY_VERSION); \
		mv $(REHEARSAL_BIN)/toxiproxy/server $(REHEARSAL_BIN)/toxiproxy-server; \
	fi

.PHONY: rehearsal
rehearsal: rehearsal-bin ## The full production rehearsal behind $(INGRESS) (INGRESS=haproxy): 3,000 SSE, 400 WebSockets, every fault; report in .tmp/rehearsal/report.md (under 15 minutes)
	$(call rehearsal-run,full,$(INGRESS),16m)

.PHONY: rehearsal-short
rehearsal-short: rehearsal-bin ## The short rehearsal (CI), behind nginx then HAProxy: 300 SSE, 50 WebSockets, a rolling restart, a backend restart, latency (about 2 minutes each)
	$(call rehearsal-run,short,nginx,6m)
	$(call rehearsal-run,short,haproxy,6m)

$(BUF): tools/package.json tools/package-lock.json
	npm ci --prefix tools --no-audit --no-fund
	@touch $(BUF)

$(WEB_DEPS): web/package.json web/client/package.json web/package-lock.json
	npm ci --prefix web --no-audit --no-fund
	@touch $(WEB_DEPS)

.PHONY: generate
generate: $(BUF) $(WEB_DEPS) ## Regenerate gen/ and web/src/gen/ from proto/ with the pinned buf and plugins
	$(BUF) generate
	go mod tidy

.PHONY: checkgenerate
checkgenerate: ## Fail if generated code or go.mod differ from what make generate writes
	@git diff --exit-code -- gen web/src/gen go.mod go.sum || { echo "generated files are stale: run make generate and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- gen web/src/gen)" || { git status --porcelain -- gen web/src/gen; echo "untracked generated files: run make generate and commit"; exit 1; }

.PHONY: web
web: $(WEB_DEPS) ## Build the demo page (with the client library's sources) into web/dist (embedded in the binary)
	cd web && node build.mjs

.PHONY: checkweb
checkweb: web ## Fail if web/dist differs from what make web builds
	@git diff --exit-code -- web/dist || { echo "web/dist is stale: run make web and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- web/dist)" || { git status --porcelain -- web/dist; echo "untracked files in web/dist: run make web and commit"; exit 1; }

.PHONY: tsc
tsc: $(WEB_DEPS) ## Type-check the demo page, the client library (web/client) and its tests
	cd web && node_modules/.bin/tsc --noEmit
	cd web/client && ../node_modules/.bin/tsc --noEmit && ../node_modules/.bin/tsc --noEmit -p tsconfig.build.json

.PHONY: webtest
webtest: $(WEB_DEPS) ## Run the client library's unit tests (vitest)
	cd web/client && ../node_modules/.bin/vitest run

.PHONY: npmpack
npmpack: $(WEB_DEPS) ## Pack @grpcbridge/client (npm pack), install it in a scratch project, type-check and run it in Chromium against a bridge
	BRIDGE_E2E=1 BRIDGE_NPM_PACKAGE=1 go test -count=1 -timeout 10m -run '^TestNPMPackage$$' ./e2e

.PHONY: newuser
newuser: $(BUF) $(WEB_DEPS) ## A new user's day (e2e/newuser_test.go): own proto and grpc-go backend outside the module, bridged with flags only, reached by curl, a Go WebSocket client, grpcurl and the npm client in Chromium
	BRIDGE_E2E=1 BRIDGE_NEW_USER=1 go test -count=1 -timeout 12m -run '^TestNewUser$$' ./e2e

# Installed by npm ci --prefix tools/apidocs; npm writes this file last.
APIDOCS_DEPS := tools/apidocs/node_modules/.package-lock.json

$(APIDOCS_DEPS): tools/apidocs/package.json tools/apidocs/package-lock.json
	npm ci --prefix tools/apidocs --no-audit --no-fund --ignore-scripts
	@touch $(APIDOCS_DEPS)

.PHONY: apidocs-check
apidocs-check: $(APIDOCS_DEPS) ## Write the OpenAPI and AsyncAPI documents of the demo (and test) services to .tmp/apidocs and validate them with pinned npm validators
	rm -rf .tmp/apidocs
	APIDOCS_DIR=$(CURDIR)/.tmp/apidocs go test -count=1 -run '^TestWriteAPIDocs$$' ./bridge
	node tools/apidocs/validate.mjs .tmp/apidocs/*.json

.PHONY: lint
lint: $(BUF) ## Vet Go, lint and format-check protos
	go vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'))" || { gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'); exit 1; }
	$(BUF) lint
	$(BUF) format -d --exit-code proto

.PHONY: lintfix
lintfix: $(BUF) ## Fix formatting of Go and protos
	gofmt -w $$(git ls-files '*.go' | grep -v '^gen/')
	$(BUF) format -w proto

.PHONY: upgrade
upgrade: ## Upgrade Go dependencies
	go get -u -t ./... && go mod tidy

.PHONY: clean
clean: ## Remove ignored artifacts
	git clean -Xdf
