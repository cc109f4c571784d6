// Package docsui holds the committed bundle of the /docs page: Swagger UI
// (swagger-ui-dist) and the script that points it at the listener's
// OpenAPI document, built by esbuild from src/ and gzipped by pack.go
// (`make docs-ui`).
package docsui

import "embed"

// Dist holds dist/docs.js.gz and dist/docs.css.gz.
//
//go:embed dist/docs.js.gz dist/docs.css.gz
var Dist embed.FS
