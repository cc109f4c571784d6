// Package validate checks the request messages of goms handlers against
// the protovalidate rules of their schemas (buf.validate annotations),
// through connectrpc.com/validate.
//
//	srv, err := goms.New(goms.Config{
//		Listeners: listeners,
//		Plugins:   []goms.Plugin{validate.New()},
//	})
//
// A request that breaks a rule fails with CodeInvalidArgument before the
// handler runs; the error carries a buf.validate.Violations detail that
// lists each violation (field path, rule, message), for every protocol.
// Streams are checked message by message.
package validate

import (
	"buf.build/go/protovalidate"
	"connectrpc.com/connect"
	connectvalidate "connectrpc.com/validate"

	"github.com/reversTeam/go-ms/goms"
)

// Validation is the validation plugin, a goms.Plugin named
// "validate". Create it with New.
type Validation struct {
	interceptor *connectvalidate.Interceptor
}

var _ goms.Plugin = (*Validation)(nil)

// Option configures New.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	validator protovalidate.Validator
}

// WithValidator validates with v, for custom protovalidate options (such
// as rules for messages known in advance). Default
// protovalidate.GlobalValidator; nil means the default.
func WithValidator(v protovalidate.Validator) Option {
	return optionFunc(func(c *config) { c.validator = v })
}

// New returns the validation plugin.
func New(opts ...Option) *Validation {
	var c config
	for _, o := range opts {
		o.apply(&c)
	}
	var vopts []connectvalidate.Option
	if c.validator != nil {
		vopts = append(vopts, connectvalidate.WithValidator(c.validator))
	}
	return &Validation{interceptor: connectvalidate.NewInterceptor(vopts...)}
}

// Name returns "validate".
func (v *Validation) Name() string { return "validate" }

// Interceptor returns the interceptor that validates requests.
func (v *Validation) Interceptor() connect.Interceptor { return v.interceptor }
