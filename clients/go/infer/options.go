package infer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
)

// Option configures Dial.
type Option func(*config) error

type config struct {
	tls         *tls.Config
	token       string
	timeout     time.Duration
	retry       RetryPolicy
	dialOptions []grpc.DialOption
}

// RetryPolicy retries calls that fail with codes.Unavailable (server or model not ready, connection refused or
// lost), and only those, with exponential backoff and jitter. The call's deadline bounds all its attempts.
type RetryPolicy struct {
	// MaxAttempts counts the first try: 1 (or less) never retries.
	MaxAttempts int
	// InitialBackoff is the pause before the first retry; each later pause doubles, up to MaxBackoff. Each pause
	// is drawn uniformly from [d/2, d] of its nominal length d so that clients do not retry in step.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
}

// backoff is the nominal pause after the given failed attempt (1-based), before jitter.
func (p RetryPolicy) backoff(attempt int) time.Duration {
	d := p.InitialBackoff
	for i := 1; i < attempt && d < p.MaxBackoff; i++ {
		d *= 2
	}
	if d > p.MaxBackoff {
		d = p.MaxBackoff
	}
	return d
}

// WithTLS connects over TLS. caFile is a PEM bundle of the CAs that sign the server's certificate ("" trusts the
// system's roots); certFile and keyFile (both or neither) are the client's PEM certificate and key for mutual TLS.
func WithTLS(caFile, certFile, keyFile string) Option {
	return func(c *config) error {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				return fmt.Errorf("infer: TLS CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("infer: TLS CA: no PEM certificate in %s", caFile)
			}
			cfg.RootCAs = pool
		}
		if (certFile == "") != (keyFile == "") {
			return errors.New("infer: TLS client certificate and key go together: give both or neither")
		}
		if certFile != "" {
			pair, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return fmt.Errorf("infer: TLS client certificate: %w", err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		c.tls = cfg
		return nil
	}
}

// WithTLSConfig connects over TLS with the given configuration (server name override, pinned keys, ...).
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *config) error {
		if cfg == nil {
			return errors.New("infer: WithTLSConfig: nil config")
		}
		c.tls = cfg.Clone()
		return nil
	}
}

// WithBearerToken sends "authorization: Bearer <token>" with every call (the server's --auth-tokens). The token
// is sent over plaintext connections too: combine it with WithTLS anywhere the network is not trusted.
func WithBearerToken(token string) Option {
	return func(c *config) error {
		if token == "" {
			return errors.New("infer: WithBearerToken: empty token")
		}
		c.token = token
		return nil
	}
}

// WithTimeout gives every unary call whose context has no deadline this one (covering its retries).
func WithTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("infer: WithTimeout: %v is not positive", d)
		}
		c.timeout = d
		return nil
	}
}

// WithRetry retries calls that fail with codes.Unavailable: up to maxAttempts tries in all, pausing initial,
// 2*initial, ... (at most max, with jitter) between them.
func WithRetry(maxAttempts int, initial, max time.Duration) Option {
	return func(c *config) error {
		if maxAttempts < 1 || initial <= 0 || max < initial {
			return fmt.Errorf("infer: WithRetry(%d, %v, %v): need maxAttempts >= 1 and 0 < initial <= max",
				maxAttempts, initial, max)
		}
		c.retry = RetryPolicy{MaxAttempts: maxAttempts, InitialBackoff: initial, MaxBackoff: max}
		return nil
	}
}

// WithDialOptions passes extra options to grpc.Dial (keepalive, message size limits, interceptors, ...).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *config) error {
		c.dialOptions = append(c.dialOptions, opts...)
		return nil
	}
}

// bearer is the per-RPC credential of WithBearerToken.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }
