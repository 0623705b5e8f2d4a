package infer

import (
	"context"
	"math/rand"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// deadlineInterceptor gives calls without a deadline the client's default one.
func deadlineInterceptor(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply interface{}, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// jitter draws a pause uniformly from [d/2, d]; safe for concurrent calls.
type jitter struct {
	mu  sync.Mutex
	rng *rand.Rand
}

func newJitter() *jitter { return &jitter{rng: rand.New(rand.NewSource(time.Now().UnixNano()))} }

func (j *jitter) draw(d time.Duration) time.Duration {
	half := int64(d / 2)
	if half <= 0 {
		return d
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return time.Duration(half + j.rng.Int63n(half+1))
}

// retryInterceptor retries codes.Unavailable as p says; any other outcome, an exhausted policy or a context that
// ends during a pause returns the last call's error unchanged (its gRPC status intact).
func retryInterceptor(p RetryPolicy, j *jitter) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply interface{}, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		for attempt := 1; ; attempt++ {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if err == nil || attempt >= p.MaxAttempts || status.Code(err) != codes.Unavailable {
				return err
			}
			pause := j.draw(p.backoff(attempt))
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < pause {
				return err
			}
			timer := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				timer.Stop()
				return err
			case <-timer.C:
			}
		}
	}
}
