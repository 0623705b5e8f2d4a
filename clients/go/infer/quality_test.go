package infer

// The model-quality calls (ReportGroundTruth, ModelPerformance, Drift) against an in-process fake control plane:
// requests and replies through the client's codec (NaN and repeated fields included), token, retries, deadline.

import (
	"context"
	"math"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/infer-serving/infer/clients/go/controlpb"
)

type fakeControl struct {
	controlpb.UnimplementedControlPlaneServer
	mu          sync.Mutex
	truth       *controlpb.GroundTruthRequest
	perf        *controlpb.ModelPerformanceRequest
	auth        []string
	truthCalls  int
	unavailable int // the first this many ReportGroundTruth calls answer Unavailable
}

func (f *fakeControl) ReportGroundTruth(ctx context.Context,
	req *controlpb.GroundTruthRequest) (*controlpb.GroundTruthResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	md, _ := metadata.FromIncomingContext(ctx)
	f.auth = md.Get("authorization")
	f.truth = req
	f.truthCalls++
	if f.truthCalls <= f.unavailable {
		return nil, status.Error(codes.Unavailable, "store busy")
	}
	if req.RequestId == "unknown" {
		return nil, status.Error(codes.NotFound, "request_id 'unknown': no prediction remembered for it")
	}
	return &controlpb.GroundTruthResponse{Model: "m", Version: "3", Rows: int64(len(req.Labels) + len(req.Values))}, nil
}

func (f *fakeControl) GetModelPerformance(_ context.Context,
	req *controlpb.ModelPerformanceRequest) (*controlpb.ModelPerformance, error) {
	f.mu.Lock()
	f.perf = req
	f.mu.Unlock()
	nan := math.NaN()
	return &controlpb.ModelPerformance{Model: req.Model, Version: "3", Kind: "regression", Samples: 24,
		Accuracy: nan, Precision: nan, Recall: nan, F1: nan, Mae: 1.5, Rmse: 2.25,
		Series: []*controlpb.PerformancePoint{{T: 1.7e9, Value: 1.5}, {T: 1.7e9 + 60, Value: nan}}}, nil
}

func (f *fakeControl) GetDrift(ctx context.Context, req *controlpb.ModelPerformanceRequest) (*controlpb.DriftReport, error) {
	if req.Model == "slow" {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return &controlpb.DriftReport{Model: req.Model, Version: req.Version, Drifted: true, EvaluatedAt: 1.7e9 + 0.5,
		Rows: 500, Reason: "psi above 0.2", Features: []*controlpb.FeatureDrift{{Feature: "history_mean",
			Kind: "numeric", Psi: 0.4, Ks: 0.3, KsP: 1e-6, Wasserstein: 1.2, Chi2: math.NaN(), Chi2P: math.NaN(),
			Drifted: true}}}, nil
}

func startFakeControl(t *testing.T) (*fakeControl, []Option) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(grpc.CustomCodec(codec{}))
	fake := &fakeControl{}
	controlpb.RegisterControlPlaneServer(srv, fake)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	dialer := grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return lis.Dial() })
	return fake, []Option{WithDialOptions(dialer)}
}

func TestReportGroundTruth(t *testing.T) {
	fake, opts := startFakeControl(t)
	c := dialFake(t, append(opts, WithBearerToken("s3cret"))...)
	ctx := context.Background()
	r, err := c.ReportGroundTruth(ctx, "r1", []string{"cat", LabelText(2), LabelText(true), LabelText(false)}, nil)
	if err != nil || r.GetModel() != "m" || r.GetVersion() != "3" || r.GetRows() != 4 {
		t.Fatalf("ReportGroundTruth(labels) = %v, %v", r, err)
	}
	if fake.truth.GetRequestId() != "r1" || !reflect.DeepEqual(fake.truth.GetLabels(), []string{"cat", "2", "true", "false"}) ||
		len(fake.truth.GetValues()) != 0 || !reflect.DeepEqual(fake.auth, []string{"Bearer s3cret"}) {
		t.Errorf("sent %v with authorization %q", fake.truth, fake.auth)
	}
	if r, err := c.ReportGroundTruth(ctx, "r2", nil, []float64{1.5, -2, 1e300}); err != nil || r.GetRows() != 3 ||
		!reflect.DeepEqual(fake.truth.GetValues(), []float64{1.5, -2, 1e300}) || len(fake.truth.GetLabels()) != 0 {
		t.Errorf("ReportGroundTruth(values) = %v, %v; sent %v", r, err, fake.truth)
	}
	_, err = c.ReportGroundTruth(ctx, "unknown", []string{"1"}, nil)
	if st, _ := status.FromError(err); st.Code() != codes.NotFound || !strings.Contains(st.Message(), "request_id") {
		t.Errorf("unknown id: %v", err)
	}
}

func TestReportGroundTruthNeedsExactlyOneKind(t *testing.T) {
	fake, opts := startFakeControl(t)
	c := dialFake(t, opts...)
	for _, tc := range []struct {
		labels []string
		values []float64
	}{{nil, nil}, {[]string{}, []float64{}}, {[]string{"1"}, []float64{1}}} {
		_, err := c.ReportGroundTruth(context.Background(), "r", tc.labels, tc.values)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "exactly one of labels") {
			t.Errorf("labels %v values %v: %v", tc.labels, tc.values, err)
		}
	}
	if fake.truthCalls != 0 {
		t.Errorf("%d refused reports reached the server", fake.truthCalls)
	}
}

func TestReportGroundTruthRetriesUnavailable(t *testing.T) {
	fake, opts := startFakeControl(t)
	fake.unavailable = 2
	c := dialFake(t, append(opts, WithRetry(3, time.Millisecond, 4*time.Millisecond))...)
	if r, err := c.ReportGroundTruth(context.Background(), "r", []string{"1"}, nil); err != nil || r.GetRows() != 1 ||
		fake.truthCalls != 3 {
		t.Fatalf("ReportGroundTruth = %v, %v after %d calls; want 1 row after 3", r, err, fake.truthCalls)
	}
}

func TestModelPerformance(t *testing.T) {
	fake, opts := startFakeControl(t)
	c := dialFake(t, opts...)
	p, err := c.ModelPerformance(context.Background(), "m", "2", 300)
	if err != nil {
		t.Fatal(err)
	}
	if fake.perf.GetModel() != "m" || fake.perf.GetVersion() != "2" || fake.perf.GetWindowS() != 300 {
		t.Errorf("sent %v", fake.perf)
	}
	if p.GetModel() != "m" || p.GetKind() != "regression" || p.GetSamples() != 24 || p.GetMae() != 1.5 ||
		p.GetRmse() != 2.25 {
		t.Errorf("answer %v", p)
	}
	for name, v := range map[string]float64{"accuracy": p.GetAccuracy(), "precision": p.GetPrecision(),
		"recall": p.GetRecall(), "f1": p.GetF1()} {
		if !math.IsNaN(v) {
			t.Errorf("%s = %v, want NaN", name, v)
		}
	}
	s := p.GetSeries()
	if len(s) != 2 || s[0].GetT() != 1.7e9 || s[0].GetValue() != 1.5 || !math.IsNaN(s[1].GetValue()) {
		t.Errorf("series %v", s)
	}
}

func TestDrift(t *testing.T) {
	_, opts := startFakeControl(t)
	c := dialFake(t, append(opts, WithTimeout(50*time.Millisecond))...)
	d, err := c.Drift(context.Background(), "m", "1")
	if err != nil {
		t.Fatal(err)
	}
	if d.GetModel() != "m" || d.GetVersion() != "1" || !d.GetDrifted() || d.GetEvaluatedAt() != 1.7e9+0.5 ||
		d.GetRows() != 500 || d.GetReason() != "psi above 0.2" || len(d.GetFeatures()) != 1 {
		t.Fatalf("answer %v", d)
	}
	f := d.GetFeatures()[0]
	if f.GetFeature() != "history_mean" || f.GetKsP() != 1e-6 || !math.IsNaN(f.GetChi2()) || !f.GetDrifted() {
		t.Errorf("feature %v", f)
	}
	if _, err := c.Drift(context.Background(), "slow", ""); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("past the default deadline: %v", err)
	}
}

func TestLabelText(t *testing.T) {
	for _, tc := range []struct {
		in   interface{}
		want string
	}{{"cat", "cat"}, {[]byte("dog"), "dog"}, {true, "true"}, {false, "false"}, {7, "7"}, {int64(-3), "-3"},
		{uint8(1), "1"}} {
		if got := LabelText(tc.in); got != tc.want {
			t.Errorf("LabelText(%#v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
