# goms developer targets. Tools are pinned in tools/go.mod and run through
# `go tool`, so a fresh machine needs only Go and make.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO ?= go
TOOL := $(GO) tool -modfile=tools/go.mod
# Test flags; override for a quick run, e.g. `make test TESTFLAGS=-short`.
TESTFLAGS ?= -race -count=1 -timeout=15m
# The Connect conformance suite: its protos (generated into gen/connectrpc)
# and its runner come from this module version.
CONFORMANCE_MODULE := connectrpc.com/conformance
CONFORMANCE_VERSION := v1.0.6
# Runner flags; e.g. `make conformance CONFORMANCE_FLAGS='--parallel 8 -v'`.
CONFORMANCE_FLAGS ?= --parallel 2

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## Run the gateway example (gRPC on 127.0.0.1:42001, Connect/gRPC-Web on 127.0.0.1:8080)
	$(GO) run ./examples/gateway

.PHONY: test
test: test-go conformance ## Run every check CI runs: Go tests with -race, then the conformance suite

.PHONY: test-go
test-go: ## Run the Go tests with the race detector
	$(GO) test $(TESTFLAGS) ./...

.PHONY: generate
generate: ## Regenerate gen/ from proto/ and from the conformance protos with buf
	$(TOOL) buf generate
	@# buf.gen.yaml cleans all of gen/, so gen/connectrpc comes second; its
	@# template cleans gen/connectrpc only.
	$(GO) mod download $(CONFORMANCE_MODULE)@$(CONFORMANCE_VERSION)
	$(TOOL) buf generate --template buf.gen.conformance.yaml \
		"$$($(GO) env GOMODCACHE)/$(CONFORMANCE_MODULE)@$(CONFORMANCE_VERSION)"

# protovalidate's buf/validate/validate.proto, vendored into third_party/
# because the Buf Schema Registry is out of reach here. The Go module
# github.com/bufbuild/protovalidate ships the file; its Go code comes from
# buf.build/gen/go/bufbuild/protovalidate, a dependency of protovalidate-go.
PROTOVALIDATE_MODULE := github.com/bufbuild/protovalidate
PROTOVALIDATE_VERSION := v1.2.2
VALIDATE_PROTO := third_party/buf/validate/validate.proto

.PHONY: vendor-protos
vendor-protos: ## Copy buf/validate/validate.proto from the pinned Go module into third_party/
	@tmp="$$(mktemp -d)"; \
	dir="$$(cd "$$tmp" && GOWORK=off $(GO) mod download -json $(PROTOVALIDATE_MODULE)@$(PROTOVALIDATE_VERSION) \
		| sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p')"; \
	rmdir "$$tmp"; \
	test -n "$$dir" || { echo "go mod download found no $(PROTOVALIDATE_MODULE)@$(PROTOVALIDATE_VERSION)"; exit 1; }; \
	mkdir -p "$$(dirname $(VALIDATE_PROTO))"; \
	{ echo "// Vendored by 'make vendor-protos' from the Go module"; \
	  echo "// $(PROTOVALIDATE_MODULE)@$(PROTOVALIDATE_VERSION), file proto/protovalidate/buf/validate/validate.proto."; \
	  echo "// Do not edit: change PROTOVALIDATE_VERSION in the Makefile and run the target again."; \
	  echo; cat "$$dir/proto/protovalidate/buf/validate/validate.proto"; } > $(VALIDATE_PROTO)
	@echo "wrote $(VALIDATE_PROTO) from $(PROTOVALIDATE_MODULE)@$(PROTOVALIDATE_VERSION)"

.PHONY: checkgenerate
checkgenerate: generate ## Fail when gen/ differs from what proto/ generates
	@if [ -n "$$(git status --porcelain -- gen)" ]; then \
		echo "gen/ is stale: run 'make generate' and commit the result"; \
		git status --porcelain -- gen; git diff --stat -- gen; exit 1; \
	fi

.PHONY: conformance
conformance: ## Run the Connect conformance suite against goms in every listener mode
	@if [ "$$(bin/connectconformance --version 2>/dev/null)" != "connectconformance $(CONFORMANCE_VERSION)" ]; then \
		echo "installing connectconformance $(CONFORMANCE_VERSION) into bin/"; \
		GOBIN="$(CURDIR)/bin" $(GO) install $(CONFORMANCE_MODULE)/cmd/connectconformance@$(CONFORMANCE_VERSION); \
	fi
	$(GO) build -o bin/conformance-server ./internal/conformance/server
	@failed=""; \
	for run in "gateway:-mode gateway" "http:-mode http" "grpc:-mode grpc" "grpc:-mode grpc -engine grpc"; do \
		conf="$${run%%:*}"; args="$${run#*:}"; start=$$(date +%s); \
		echo "conformance: conformance/$$conf.yaml, conformance-server $$args"; \
		if bin/connectconformance --mode server --conf "conformance/$$conf.yaml" $(CONFORMANCE_FLAGS) -- bin/conformance-server $$args; then \
			echo "conformance: $$args passed in $$(( $$(date +%s) - start ))s"; \
		else \
			echo "conformance: $$args FAILED in $$(( $$(date +%s) - start ))s"; failed="$$failed [$$args]"; \
		fi; \
	done; \
	if [ -n "$$failed" ]; then echo "conformance failed for$$failed"; exit 1; fi

.PHONY: lint
lint: ## gofmt, go vet, staticcheck, buf lint and buf format
	@unformatted="$$(gofmt -l $$(git ls-files '*.go'))"; \
	if [ -n "$$unformatted" ]; then echo "gofmt wants to change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(TOOL) staticcheck ./...
	$(TOOL) buf lint
	$(TOOL) buf format --diff --exit-code

.PHONY: breaking
breaking: ## Check proto/ for breaking changes against main
	$(TOOL) buf breaking --against '.git#branch=main'

.PHONY: tidy
tidy: ## go mod tidy for both modules
	$(GO) mod tidy
	cd tools && $(GO) mod tidy

# The load benchmark lives in bench/, a module of its own (grpc-go's code
# generators and grpc-gateway stay out of goms's dependencies). It needs two
# CPUs: servers are bound to CPU 0, the load client to CPU 1.
.PHONY: bench
bench: ## Load benchmark vs connect-go, grpc-go, grpc-gateway (~13 min); writes docs/benchmarks.md
	cd bench && $(GO) run ./cmd/bench -out ../docs/benchmarks.md

.PHONY: bench-quick
bench-quick: ## Check that every benchmark server answers each of its protocols (~30 s, no timings)
	cd bench && $(GO) run ./cmd/bench -quick
