package goms

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	connectcors "connectrpc.com/cors"
	"github.com/rs/cors"
)

// defaultCORSMaxAge is how long browsers may cache a preflight answer when
// CORS.MaxAge is zero: two hours, the longest Chromium honours.
const defaultCORSMaxAge = 2 * time.Hour

// CORS lets web pages served from other origins call a listener from a
// browser. The zero value allows no other origin: browsers then let only
// pages of the listener's own origin read its answers.
//
// An allowed origin gets the methods and headers Connect and gRPC-Web
// need (connectrpc.com/cors), plus PUT, PATCH and DELETE on a listener
// that serves REST. Preflight requests (OPTIONS with
// Access-Control-Request-Method) are answered before the protocol filter;
// a request from an origin not in the list gets no CORS headers, so the
// browser keeps its answer from the page.
type CORS struct {
	// AllowedOrigins lists the origins, "scheme://host[:port]", whose
	// pages may call the listener. An origin may hold one "*" that
	// matches any characters ("https://*.example.com"); "*" alone
	// allows every origin. Empty, the default, turns CORS off.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// AllowedHeaders are the request headers pages may send besides
	// those of Connect and gRPC-Web, such as "Authorization". Default
	// none.
	AllowedHeaders []string `yaml:"allowed_headers"`
	// ExposedHeaders are the response headers pages may read besides
	// those of gRPC-Web (Grpc-Status, Grpc-Message,
	// Grpc-Status-Details-Bin), such as "X-Request-Id". Default none.
	ExposedHeaders []string `yaml:"exposed_headers"`
	// MaxAge is how long browsers may cache a preflight answer. Default
	// 2h, the longest Chromium honours.
	MaxAge time.Duration `yaml:"max_age"`
}

// check validates c and returns it with its defaults applied.
func (c CORS) check() (CORS, error) {
	if len(c.AllowedOrigins) == 0 {
		if len(c.AllowedHeaders) > 0 || len(c.ExposedHeaders) > 0 || c.MaxAge != 0 {
			return c, fmt.Errorf("cors: allowed_origins is empty, so the other settings do nothing; list the origins to allow")
		}
		return c, nil
	}
	for _, origin := range c.AllowedOrigins {
		if err := checkOrigin(origin); err != nil {
			return c, fmt.Errorf("cors: allowed_origins: %q: %w", origin, err)
		}
	}
	for _, h := range slices.Concat(c.AllowedHeaders, c.ExposedHeaders) {
		if h == "" || strings.ContainsAny(h, " \t,:") {
			return c, fmt.Errorf("cors: header name %q: want one header name, such as \"Authorization\"", h)
		}
	}
	switch {
	case c.MaxAge < 0:
		return c, fmt.Errorf("cors: max_age: %v is negative", c.MaxAge)
	case c.MaxAge == 0:
		c.MaxAge = defaultCORSMaxAge
	}
	return c, nil
}

// checkOrigin accepts "*" and "scheme://host[:port]" with at most one "*".
func checkOrigin(origin string) error {
	if origin == "*" {
		return nil
	}
	if strings.Count(origin, "*") > 1 {
		return fmt.Errorf("at most one \"*\" per origin")
	}
	u, err := url.Parse(strings.Replace(origin, "*", "x", 1))
	if err != nil {
		return err
	}
	if u.Scheme == "" || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf(`want "scheme://host" or "scheme://host:port", without path`)
	}
	return nil
}

// handler returns next behind the CORS rules of c, or nil when c
// allows no origin.
func (c CORS) handler(rest bool, next http.Handler) http.Handler {
	if len(c.AllowedOrigins) == 0 {
		return nil
	}
	methods := connectcors.AllowedMethods()
	if rest {
		methods = append(methods, http.MethodPut, http.MethodPatch, http.MethodDelete)
	}
	return cors.New(cors.Options{
		AllowedOrigins: c.AllowedOrigins,
		AllowedMethods: methods,
		AllowedHeaders: slices.Concat(connectcors.AllowedHeaders(), c.AllowedHeaders),
		ExposedHeaders: slices.Concat(connectcors.ExposedHeaders(), c.ExposedHeaders),
		MaxAge:         int(c.MaxAge / time.Second),
	}).Handler(next)
}
