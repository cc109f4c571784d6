package goms

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/reversTeam/go-ms/goms/internal/docsui"
)

// docsPath is where a listener with Listener.OpenAPI serves a page that
// lists the operations of its OpenAPI document and calls them (Swagger
// UI, bundled into goms: the page loads nothing from elsewhere). Its
// script and style sheet are under docsPath + "/".
const docsPath = "/docs"

const docsPage = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="docs/docs.css">
</head>
<body>
<div id="docs"></div>
<script src="docs/docs.js"></script>
</body>
</html>
`

// docsAsset is one file of the page, gzipped, and plain for the clients
// that do not take gzip (decompressed when one first asks).
type docsAsset struct {
	contentType string
	gz          []byte
	plain       func() []byte
}

// docsAssets reads the bundle once, on first use.
var docsAssets = sync.OnceValue(func() map[string]*docsAsset {
	page := compress([]byte(docsPage))
	assets := map[string]*docsAsset{
		docsPath:               {contentType: "text/html; charset=utf-8", gz: page},
		docsPath + "/docs.js":  {contentType: "text/javascript; charset=utf-8"},
		docsPath + "/docs.css": {contentType: "text/css; charset=utf-8"},
	}
	for path, a := range assets {
		if a.gz == nil {
			data, err := docsui.Dist.ReadFile("dist/" + strings.TrimPrefix(path, docsPath+"/") + ".gz")
			if err != nil {
				panic("goms: the docs page bundle lacks " + path) // embedded at build time
			}
			a.gz = data
		}
		a.plain = sync.OnceValue(func() []byte {
			zr, err := gzip.NewReader(bytes.NewReader(a.gz))
			if err != nil {
				panic("goms: the docs page bundle is not gzip: " + err.Error()) // embedded at build time
			}
			data, err := io.ReadAll(zr)
			if err != nil {
				panic("goms: the docs page bundle is not gzip: " + err.Error())
			}
			return data
		})
	}
	return assets
})

func compress(data []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write(data)
	_ = zw.Close()
	return buf.Bytes()
}

// docsRoutes returns the exact routes of the docs page.
func docsRoutes() map[string]http.Handler {
	routes := make(map[string]http.Handler, 3)
	for _, path := range []string{docsPath, docsPath + "/docs.js", docsPath + "/docs.css"} {
		routes[path] = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			serveDocsAsset(w, r, docsAssets()[path])
		})
	}
	return routes
}

func serveDocsAsset(w http.ResponseWriter, r *http.Request, a *docsAsset) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed: the docs page answers GET", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("Vary", "Accept-Encoding")
	h.Set("X-Content-Type-Options", "nosniff")
	// The page runs only this origin's code and calls only this origin.
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'")
	body := a.gz
	if acceptsGzip(r) {
		h.Set("Content-Encoding", "gzip")
	} else {
		body = a.plain()
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(coding), "gzip") && !strings.Contains(strings.ReplaceAll(params, " ", ""), "q=0") {
				return true
			}
		}
	}
	return false
}
