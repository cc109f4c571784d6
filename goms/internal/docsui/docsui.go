// Package docsui holds the committed bundle of the /docs page: Swagger UI
// (swagger-ui-dist) and the script that points it at the listener's
// OpenAPI document, built by esbuild from src/ (`make docs-ui`).
package docsui

import "embed"

// Dist holds dist/docs.js and dist/docs.css.
//
//go:embed dist/docs.js dist/docs.css
var Dist embed.FS
