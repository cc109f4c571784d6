package goms

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
)

// The policies of Auth.Default and Auth.Policies.
const (
	// policyPublic lets every caller through, without checking
	// credentials. A verified client certificate still gives the call an
	// Identity.
	policyPublic = "public"
	// policyAuthenticated lets through callers whose credentials the
	// Verifier accepts, or who presented a client certificate that a
	// listener with ClientCAFile verified.
	policyAuthenticated = "authenticated"
	// policyDenied refuses every caller with CodePermissionDenied.
	policyDenied = "denied"
)

// defaultAPIKeyHeader is the header Auth reads API keys from unless
// Auth.APIKeyHeader says otherwise.
const defaultAPIKeyHeader = "X-Api-Key"

// Auth configures the "auth" interceptor. It is on when
// Verifier, Default or Policies is set.
type Auth struct {
	// Default is the policy of the procedures Policies does not name:
	// "public" (every caller, credentials unchecked; a verified client
	// certificate still gives the call an Identity), "authenticated"
	// (callers whose credentials Verifier accepts, or with a client
	// certificate a listener with ClientCAFile verified) or "denied"
	// (CodePermissionDenied for all). Default "authenticated": a procedure
	// nobody thought about is closed. grpc.health.v1.Health is public
	// unless Policies names it.
	Default string `yaml:"default"`
	// Policies sets the policy of one service ("goms.v1.GoMsService") or
	// one method ("goms.v1.GoMsService/Delete"); a method's entry wins
	// over its service's. Keys that name nothing mounted are an error
	// when the server starts.
	Policies map[string]string `yaml:"policies"`
	// APIKeyHeader is the request header that carries API keys. Default
	// "X-Api-Key".
	APIKeyHeader string `yaml:"api_key_header"`
	// Verifier checks the bearer token or API key of a call to an
	// authenticated procedure. Nil means that only client certificates
	// authenticate callers.
	Verifier Verifier `yaml:"-"`
}

// Verifier checks the credentials a caller presented and says who the
// caller is. It runs only for calls that carry a bearer token or an API
// key to a procedure whose policy is "authenticated". An error refuses the call
// with CodeUnauthenticated, or with CodePermissionDenied when the error is
// a *connect.Error with that code; either way the caller sees no more than
// the code. The error goes to the server's log at debug level.
type Verifier func(ctx context.Context, c Credentials) (Identity, error)

// Credentials are what a caller presented.
type Credentials struct {
	// Procedure is the called procedure, "/goms.v1.GoMsService/Delete".
	Procedure string
	// Bearer is the token of an "Authorization: Bearer <token>" header.
	Bearer string
	// APIKey is the value of the Auth.APIKeyHeader header.
	APIKey string
	// PeerCertificate is the client certificate, already verified by a
	// listener with ClientCAFile; nil without mutual TLS.
	PeerCertificate *x509.Certificate
}

// Identity is who a caller is, as the Verifier or the client certificate
// says. Handlers read it with IdentityFrom.
type Identity struct {
	// Subject names the caller: a user or service name, or a
	// certificate's first URI SAN (a SPIFFE id, say) or else its subject
	// common name.
	Subject string
	// Method says how the caller proved it: "bearer", "apikey", "mtls",
	// or what the Verifier sets.
	Method string
	// Attributes holds what else the Verifier wants handlers to know,
	// such as roles or claims.
	Attributes map[string]string
}

type identityKey struct{}

// IdentityFrom returns the identity of the caller of the call ctx belongs
// to, and whether there is one: calls to public procedures have one only
// when the caller presented a verified client certificate.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(*Identity)
	if !ok {
		return Identity{}, false
	}
	return *id, true
}

// withIdentity returns a copy of ctx that carries id, for IdentityFrom.
func withIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, &id)
}

// The errors of refused calls: fixed texts, so that nothing about the
// credentials or the policy reaches the caller.
var (
	errUnauthenticated  = errors.New("unauthenticated")
	errPermissionDenied = errors.New("permission denied")
)

func (a Auth) enabled() bool {
	return a.Verifier != nil || a.Default != "" || len(a.Policies) > 0
}

func validPolicy(p string) bool {
	return p == policyPublic || p == policyAuthenticated || p == policyDenied
}

// withDefaults checks the policies and fills in the defaults.
func (a Auth) withDefaults() (Auth, error) {
	if a.Default == "" {
		a.Default = policyAuthenticated
	}
	if !validPolicy(a.Default) {
		return a, fmt.Errorf("goms: auth.default: policy %q: want %q, %q or %q", a.Default, policyPublic, policyAuthenticated, policyDenied)
	}
	for key, p := range a.Policies {
		if !validPolicy(p) {
			return a, fmt.Errorf("goms: auth.policies[%q]: policy %q: want %q, %q or %q", key, p, policyPublic, policyAuthenticated, policyDenied)
		}
	}
	if a.APIKeyHeader == "" {
		a.APIKeyHeader = defaultAPIKeyHeader
	}
	a.APIKeyHeader = http.CanonicalHeaderKey(a.APIKeyHeader)
	return a, nil
}

// needsCredentials reports whether some procedure may be authenticated.
func (a Auth) needsCredentials() bool {
	if a.Default == policyAuthenticated {
		return true
	}
	for _, p := range a.Policies {
		if p == policyAuthenticated {
			return true
		}
	}
	return false
}

// checkAuth returns the auth interceptor of cfg, or nil when auth is off.
// It refuses a configuration in which authenticated procedures could never
// be called: no Verifier and no listener that verifies client certificates.
func checkAuth(cfg Config, logger *slog.Logger) (*authInterceptor, error) {
	if !cfg.Auth.enabled() {
		return nil, nil
	}
	a, err := cfg.Auth.withDefaults()
	if err != nil {
		return nil, err
	}
	if a.Verifier == nil && a.needsCredentials() && !anyMutualTLS(cfg.Listeners) {
		return nil, errors.New("goms: auth: some procedures are authenticated, but there is no verifier and no listener with client_ca_file")
	}
	return &authInterceptor{auth: a, logger: logger}, nil
}

func anyMutualTLS(listeners []Listener) bool {
	for _, l := range listeners {
		if l.ClientCAFile != "" || (l.TLSConfig != nil && l.TLSConfig.ClientAuth >= tls.VerifyClientCertIfGiven) {
			return true
		}
	}
	return false
}

// checkPolicies reports policies for services or methods that nothing
// mounts.
func (a *authInterceptor) checkPolicies(mounted, procedures map[string]bool) error {
	for key := range a.auth.Policies {
		if strings.Contains(key, "/") {
			if !procedures["/"+key] {
				return fmt.Errorf("goms: auth.policies[%q]: no mounted service has this method", key)
			}
		} else if !mounted[key] {
			return fmt.Errorf("goms: auth.policies[%q]: no such service is mounted", key)
		}
	}
	return nil
}

// authInterceptor applies Auth to the calls of handlers.
type authInterceptor struct {
	auth   Auth
	logger *slog.Logger
}

// policy returns the policy of a procedure ("/pkg.Service/Method").
func (a *authInterceptor) policy(procedure string) string {
	name := procedure[min(1, len(procedure)):]
	if p, ok := a.auth.Policies[name]; ok {
		return p
	}
	service, _, _ := strings.Cut(name, "/")
	if p, ok := a.auth.Policies[service]; ok {
		return p
	}
	if service == grpchealth.HealthV1ServiceName {
		return policyPublic
	}
	return a.auth.Default
}

// authenticate returns ctx with the caller's identity, or the error the
// call fails with.
func (a *authInterceptor) authenticate(ctx context.Context, procedure string, header http.Header) (context.Context, error) {
	policy := a.policy(procedure)
	if policy == policyDenied {
		return ctx, connect.NewError(connect.CodePermissionDenied, errPermissionDenied)
	}
	cert := PeerCertificateFrom(ctx)
	if policy == policyPublic {
		if cert != nil {
			ctx = withIdentity(ctx, certIdentity(cert))
		}
		return ctx, nil
	}
	creds := Credentials{Procedure: procedure, PeerCertificate: cert, APIKey: header.Get(a.auth.APIKeyHeader)}
	if token, ok := bearer(header.Get("Authorization")); ok {
		creds.Bearer = token
	}
	if creds.Bearer == "" && creds.APIKey == "" {
		if cert != nil {
			return withIdentity(ctx, certIdentity(cert)), nil
		}
		return ctx, connect.NewError(connect.CodeUnauthenticated, errUnauthenticated)
	}
	if a.auth.Verifier == nil {
		return ctx, connect.NewError(connect.CodeUnauthenticated, errUnauthenticated)
	}
	id, err := a.auth.Verifier(ctx, creds)
	if err != nil {
		a.logger.DebugContext(ctx, "goms: credentials refused", "procedure", procedure, "err", err)
		if connect.CodeOf(err) == connect.CodePermissionDenied {
			return ctx, connect.NewError(connect.CodePermissionDenied, errPermissionDenied)
		}
		return ctx, connect.NewError(connect.CodeUnauthenticated, errUnauthenticated)
	}
	if id.Method == "" {
		id.Method = "apikey"
		if creds.Bearer != "" {
			id.Method = "bearer"
		}
	}
	return withIdentity(ctx, id), nil
}

// bearer returns the token of an "Authorization: Bearer <token>" value;
// the scheme is case-insensitive (RFC 9110, section 11.1).
func bearer(v string) (string, bool) {
	const prefix = "bearer "
	if len(v) <= len(prefix) || !strings.EqualFold(v[:len(prefix)], prefix) {
		return "", false
	}
	return strings.TrimSpace(v[len(prefix):]), true
}

// certIdentity names the holder of a client certificate: its first URI SAN
// (SPIFFE ids live there), else its subject common name.
func certIdentity(cert *x509.Certificate) Identity {
	subject := cert.Subject.CommonName
	if len(cert.URIs) > 0 {
		subject = cert.URIs[0].String()
	}
	return Identity{Subject: subject, Method: "mtls"}
}

func (a *authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		ctx, err := a.authenticate(ctx, req.Spec().Procedure, req.Header())
		if err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (*authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a *authInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, err := a.authenticate(ctx, conn.Spec().Procedure, conn.RequestHeader())
		if err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

type peerCertificateKey struct{}

// PeerCertificateFrom returns the client certificate of the call ctx belongs
// to, verified by a listener with ClientCAFile (or a TLSConfig that
// verifies client certificates), or nil.
func PeerCertificateFrom(ctx context.Context) *x509.Certificate {
	cert, _ := ctx.Value(peerCertificateKey{}).(*x509.Certificate)
	return cert
}

// withPeerCertificate puts the verified client certificate of r, if any,
// into its context, where interceptors can find it: connect's Peer does
// not carry the TLS state.
func withPeerCertificate(r *http.Request) *http.Request {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.PeerCertificates) == 0 {
		return r
	}
	return r.WithContext(context.WithValue(r.Context(), peerCertificateKey{}, r.TLS.PeerCertificates[0]))
}
