// Package infer is a thin Go client of infer's gRPC API: the Open Inference Protocol (KServe V2,
// inference.GRPCInferenceService), the standard grpc.health.v1 service and, through Control, infer's control plane.
//
// Dial opens a connection (TLS, bearer token, default deadline and retries on Unavailable as options). The
// common calls have methods; Infer sends typed Go slices as little-endian raw_input_contents and decodes the
// outputs back to typed slices. Every other RPC is on the generated stubs that Inference and Control return,
// which share the connection and its options.
//
// Errors of calls that reached the server are the gRPC status errors grpc-go returns, unwrapped: status.Code(err)
// and status.FromError(err) give the server's code and message. Requests that Infer cannot encode fail with
// codes.InvalidArgument before anything is sent, and responses it cannot decode with codes.Internal.
package infer

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/infer-serving/infer/clients/go/controlpb"
	"github.com/infer-serving/infer/clients/go/inferpb"
)

// HealthStatus is a grpc.health.v1 serving status.
type HealthStatus = healthpb.HealthCheckResponse_ServingStatus

// The grpc.health.v1 serving statuses.
const (
	HealthUnknown        = healthpb.HealthCheckResponse_UNKNOWN
	HealthServing        = healthpb.HealthCheckResponse_SERVING
	HealthNotServing     = healthpb.HealthCheckResponse_NOT_SERVING
	HealthServiceUnknown = healthpb.HealthCheckResponse_SERVICE_UNKNOWN
)

// Client is a connection to an infer server; safe for concurrent use.
type Client struct {
	conn    *grpc.ClientConn
	infer   inferpb.GRPCInferenceServiceClient
	control controlpb.ControlPlaneClient
	health  healthpb.HealthClient
}

// Dial connects to target ("host:port" or any grpc-go target). The connection is made lazily: a server that is
// down shows up as codes.Unavailable on the first call (retried under WithRetry), not as a Dial error.
func Dial(target string, opts ...Option) (*Client, error) {
	if target == "" {
		return nil, errors.New("infer: Dial: empty target (want host:port)")
	}
	var cfg config
	for _, opt := range opts {
		if err := opt(&cfg); err != nil {
			return nil, err
		}
	}
	dialOpts := []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.ForceCodec(codec{}))}
	if cfg.tls != nil {
		dialOpts = append(dialOpts, grpc.WithTransportCredentials(credentials.NewTLS(cfg.tls)))
	} else {
		dialOpts = append(dialOpts, grpc.WithInsecure())
	}
	if cfg.token != "" {
		dialOpts = append(dialOpts, grpc.WithPerRPCCredentials(bearer(cfg.token)))
	}
	var chain []grpc.UnaryClientInterceptor
	if cfg.timeout > 0 {
		chain = append(chain, deadlineInterceptor(cfg.timeout))
	}
	if cfg.retry.MaxAttempts > 1 {
		chain = append(chain, retryInterceptor(cfg.retry, newJitter()))
	}
	if len(chain) > 0 {
		dialOpts = append(dialOpts, grpc.WithChainUnaryInterceptor(chain...))
	}
	conn, err := grpc.Dial(target, append(dialOpts, cfg.dialOptions...)...)
	if err != nil {
		return nil, err
	}
	return &Client{
		conn:    conn,
		infer:   inferpb.NewGRPCInferenceServiceClient(conn),
		control: controlpb.NewControlPlaneClient(conn),
		health:  healthpb.NewHealthClient(conn),
	}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the underlying connection, for other services' stubs.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Inference is the generated GRPCInferenceService stub on this connection (ModelConfig, ModelStatistics,
// repository control, ModelStreamInfer, ...).
func (c *Client) Inference() inferpb.GRPCInferenceServiceClient { return c.infer }

// Control is the generated stub of infer's control plane (registry, lifecycle, deployments) on this connection.
func (c *Client) Control() controlpb.ControlPlaneClient { return c.control }

// ServerLive reports whether the server is live.
func (c *Client) ServerLive(ctx context.Context) (bool, error) {
	r, err := c.infer.ServerLive(ctx, &inferpb.ServerLiveRequest{})
	return r.GetLive(), err
}

// ServerReady reports whether the server is ready (every model it should serve is loaded).
func (c *Client) ServerReady(ctx context.Context) (bool, error) {
	r, err := c.infer.ServerReady(ctx, &inferpb.ServerReadyRequest{})
	return r.GetReady(), err
}

// ModelReady reports whether a model version ("" for the newest ready one) is ready.
func (c *Client) ModelReady(ctx context.Context, model, version string) (bool, error) {
	r, err := c.infer.ModelReady(ctx, &inferpb.ModelReadyRequest{Name: model, Version: version})
	return r.GetReady(), err
}

// ServerMetadata returns the server's name, version and protocol extensions.
func (c *Client) ServerMetadata(ctx context.Context) (*inferpb.ServerMetadataResponse, error) {
	return c.infer.ServerMetadata(ctx, &inferpb.ServerMetadataRequest{})
}

// ModelMetadata returns a model version's ("" for the newest ready one) inputs, outputs and versions.
func (c *Client) ModelMetadata(ctx context.Context, model, version string) (*inferpb.ModelMetadataResponse, error) {
	return c.infer.ModelMetadata(ctx, &inferpb.ModelMetadataRequest{Name: model, Version: version})
}

// Health asks the grpc.health.v1 service: "" is the server's liveness, "ready" its readiness.
func (c *Client) Health(ctx context.Context, service string) (HealthStatus, error) {
	r, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return HealthUnknown, err
	}
	return r.GetStatus(), nil
}
