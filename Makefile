# goms developer targets. Tools are pinned in tools/go.mod and run through
# `go tool`, so a fresh machine needs only Go and make.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO ?= go
TOOL := $(GO) tool -modfile=tools/go.mod
# Test flags; override for a quick run, e.g. `make test TESTFLAGS=-short`.
TESTFLAGS ?= -race -count=1 -timeout=15m

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## Run the gateway example (gRPC on 127.0.0.1:42001, Connect/gRPC-Web on 127.0.0.1:8080)
	$(GO) run ./examples/gateway

.PHONY: test
test: ## Run every test with the race detector (what CI runs)
	$(GO) test $(TESTFLAGS) ./...

.PHONY: generate
generate: ## Regenerate gen/ from proto/ with buf
	$(TOOL) buf generate

.PHONY: checkgenerate
checkgenerate: generate ## Fail when gen/ differs from what proto/ generates
	@if [ -n "$$(git status --porcelain -- gen)" ]; then \
		echo "gen/ is stale: run 'make generate' and commit the result"; \
		git status --porcelain -- gen; git diff --stat -- gen; exit 1; \
	fi

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
