package infer

// Tests against a running infer server at $INFER_TARGET (host:port) serving the default model repository
// (the anomaly pipeline and the forecast model). Each one fails, rather than skips, when INFER_TARGET is unset.

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/infer-serving/infer/clients/go/inferpb"
)

func serverClient(t *testing.T) (*Client, context.Context) {
	t.Helper()
	target := os.Getenv("INFER_TARGET")
	if target == "" {
		t.Fatal("INFER_TARGET is not set: these tests need a running infer server serving the default model " +
			"repository, e.g. INFER_TARGET=127.0.0.1:8001 (clients/go/test.sh requires it and passes it on)")
	}
	c, err := Dial(target, WithTimeout(30*time.Second), WithRetry(4, 100*time.Millisecond, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c, ctx
}

// anomalyEvents are the README's two raw events, one per row.
func anomalyEvents() []Tensor {
	now := float64(time.Now().UnixNano()) / 1e9
	col := []int64{2, 1}
	return []Tensor{
		NewTensor("timestamp", col, []float64{now, now + 1}),
		NewTensor("user", col, []string{"alice", "bob"}),
		NewTensor("namespace", col, []string{"finance", "secrets"}),
		NewTensor("file_type", col, []string{"pdf", "exe"}),
		NewTensor("content_hash", col, []string{
			"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", strings.Repeat("0", 64)}),
		NewTensor("file_size", col, []int64{250_000, 2_000_000_000}),
		NewTensor("hash_time_ms", col, []float32{12.5, 900}),
		NewTensor("api_latency_ms", col, []float32{85, 4000}),
		NewTensor("concurrency", col, []int32{8, 120}),
	}
}

// hourlyHistory is two weeks of hourly requests per second, busier by day (the README's capacity example).
func hourlyHistory() []float32 {
	h := make([]float32, 24*14)
	for i := range h {
		h[i] = float32(900 + 400*math.Sin(2*math.Pi*float64(i-6)/24) + 30*math.Sin(float64(i)*1.7))
	}
	return h
}

func TestTargetHealth(t *testing.T) {
	c, ctx := serverClient(t)
	for _, service := range []string{"", "ready"} {
		if s, err := c.Health(ctx, service); err != nil || s != HealthServing {
			t.Errorf("Health(%q) = %v, %v; want SERVING", service, s, err)
		}
	}
	if live, err := c.ServerLive(ctx); err != nil || !live {
		t.Errorf("ServerLive = %v, %v", live, err)
	}
	if ready, err := c.ServerReady(ctx); err != nil || !ready {
		t.Errorf("ServerReady = %v, %v", ready, err)
	}
	for _, model := range []string{"anomaly", "forecast"} {
		if ready, err := c.ModelReady(ctx, model, ""); err != nil || !ready {
			t.Errorf("ModelReady(%s) = %v, %v", model, ready, err)
		}
	}
}

func TestTargetServerMetadata(t *testing.T) {
	c, ctx := serverClient(t)
	md, err := c.ServerMetadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if md.GetName() == "" || md.GetVersion() == "" {
		t.Errorf("server metadata without a name or version: %v", md)
	}
}

func TestTargetModelMetadata(t *testing.T) {
	c, ctx := serverClient(t)
	cases := map[string]map[string]string{ // model -> input -> datatype
		"anomaly": {"timestamp": "FP64", "user": "BYTES", "namespace": "BYTES", "file_type": "BYTES",
			"content_hash": "BYTES", "file_size": "INT64", "hash_time_ms": "FP32", "api_latency_ms": "FP32",
			"concurrency": "INT32"},
		"forecast": {"history": "FP32", "length": "INT32", "horizon": "INT32", "levels": "FP32", "season": "INT32",
			"scenario": "FP32"},
	}
	for model, inputs := range cases {
		md, err := c.ModelMetadata(ctx, model, "")
		if err != nil {
			t.Fatalf("ModelMetadata(%s): %v", model, err)
		}
		if md.GetName() != model || len(md.GetVersions()) == 0 || md.GetPlatform() == "" {
			t.Errorf("ModelMetadata(%s) header: %v", model, md)
		}
		got := map[string]string{}
		for _, in := range md.GetInputs() {
			got[in.GetName()] = in.GetDatatype()
		}
		for name, datatype := range inputs {
			if got[name] != datatype {
				t.Errorf("%s input %s: datatype %q, want %s", model, name, got[name], datatype)
			}
		}
	}
	anomaly, _ := c.ModelMetadata(ctx, "anomaly", "")
	for _, name := range []string{"score", "is_anomalous", "severity", "anomaly_type", "top_features"} {
		if metaOutput(anomaly, name) == nil {
			t.Errorf("anomaly has no output %s", name)
		}
	}
}

func metaOutput(md *inferpb.ModelMetadataResponse, name string) *inferpb.ModelMetadataResponse_TensorMetadata {
	for _, o := range md.GetOutputs() {
		if o.GetName() == name {
			return o
		}
	}
	return nil
}

// checkOutputs checks every output against the model's metadata (datatype; shape: the batch, then the declared
// dims, -1 matching any) and that every floating-point value is finite.
func checkOutputs(t *testing.T, md *inferpb.ModelMetadataResponse, res *Result, batch int64) {
	t.Helper()
	if len(res.Outputs) != len(md.GetOutputs()) {
		t.Errorf("%s answered %d outputs, its metadata declares %d", md.GetName(), len(res.Outputs), len(md.GetOutputs()))
	}
	for _, out := range res.Outputs {
		meta := metaOutput(md, out.Name)
		if meta == nil {
			t.Errorf("output %s is not in %s's metadata", out.Name, md.GetName())
			continue
		}
		if out.Datatype != meta.GetDatatype() {
			t.Errorf("output %s: datatype %s, metadata says %s", out.Name, out.Datatype, meta.GetDatatype())
		}
		want := meta.GetShape()
		if len(want) > 0 && want[0] == -1 {
			want = want[1:] // metadata that names the batch dimension
		}
		ok := len(out.Shape) == len(want)+1 && out.Shape[0] == batch
		for i := 0; ok && i < len(want); i++ {
			ok = want[i] == -1 || want[i] == out.Shape[i+1]
		}
		if !ok {
			t.Errorf("output %s: shape %v, want [%d %v]", out.Name, out.Shape, batch, want)
		}
		if v, isFloat := out.Data.([]float32); isFloat {
			for i, x := range v {
				if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
					t.Errorf("output %s[%d] = %v", out.Name, i, x)
					break
				}
			}
		}
	}
}

func TestTargetInferAnomaly(t *testing.T) {
	c, ctx := serverClient(t)
	res, err := c.Infer(ctx, "anomaly", anomalyEvents(), RequestID("go-sdk-anomaly"))
	if err != nil {
		t.Fatal(err)
	}
	md, err := c.ModelMetadata(ctx, "anomaly", "")
	if err != nil {
		t.Fatal(err)
	}
	checkOutputs(t, md, res, 2)
	if res.Model != "anomaly" || res.ID != "go-sdk-anomaly" {
		t.Errorf("model %q id %q", res.Model, res.ID)
	}
	score, err := Values[float32](res, "score")
	if err != nil || len(score) != 2 {
		t.Fatalf("score %v %v", score, err)
	}
	for _, s := range score {
		if s < 0 || s > 1 {
			t.Errorf("score %v outside 0-1", score)
		}
	}
	if flags, err := Values[bool](res, "is_anomalous"); err != nil || len(flags) != 2 {
		t.Errorf("is_anomalous %v %v", flags, err)
	}
	severities := map[string]bool{"NONE": true, "LOW": true, "MEDIUM": true, "HIGH": true, "CRITICAL": true}
	sev, err := Values[string](res, "severity")
	if err != nil || len(sev) != 2 || !severities[sev[0]] || !severities[sev[1]] {
		t.Errorf("severity %q %v", sev, err)
	}
	if top, err := Values[string](res, "top_features"); err != nil || len(top) != 6 || top[0] == "" {
		t.Errorf("top_features %q %v", top, err)
	}
}

func TestTargetInferForecast(t *testing.T) {
	c, ctx := serverClient(t)
	history := hourlyHistory()
	res, err := c.Infer(ctx, "forecast", []Tensor{
		NewTensor("history", []int64{1, int64(len(history))}, history),
		NewTensor("horizon", []int64{1, 1}, []int32{24}),
		NewTensor("levels", []int64{1, 1}, []float32{95}),
	})
	if err != nil {
		t.Fatal(err)
	}
	md, err := c.ModelMetadata(ctx, "forecast", "")
	if err != nil {
		t.Fatal(err)
	}
	checkOutputs(t, md, res, 1)
	mean, _ := res.Output("mean")
	lower, _ := res.Output("lower")
	upper, _ := res.Output("upper")
	if !equalShape(mean.Shape, 1, 24) || !equalShape(lower.Shape, 1, 1, 24) || !equalShape(upper.Shape, 1, 1, 24) {
		t.Fatalf("shapes: mean %v lower %v upper %v; want [1 24], [1 1 24], [1 1 24]", mean.Shape, lower.Shape, upper.Shape)
	}
	m, lo, hi := mean.Data.([]float32), lower.Data.([]float32), upper.Data.([]float32)
	for i := range m {
		if !(lo[i] <= m[i] && m[i] <= hi[i]) || m[i] < 0 || m[i] > 3000 {
			t.Errorf("step %d: %v <= %v <= %v does not hold or is implausible", i, lo[i], m[i], hi[i])
		}
	}
	model, err := Values[string](res, "model")
	if err != nil || len(model) != 1 || model[0] == "" {
		t.Errorf("model %q %v", model, err)
	}
}

func equalShape(shape []int64, want ...int64) bool {
	if len(shape) != len(want) {
		return false
	}
	for i := range shape {
		if shape[i] != want[i] {
			return false
		}
	}
	return true
}

func TestTargetBadRequests(t *testing.T) {
	c, ctx := serverClient(t)
	events := anomalyEvents()

	wrongType := append([]Tensor(nil), events...)
	wrongType[0] = NewTensor("timestamp", []int64{2, 1}, []float32{1, 2}) // FP32 where FP64 is declared
	missing := append([]Tensor(nil), events[:1]...)
	missing = append(missing, events[2:]...) // no "user"

	cases := []struct {
		name   string
		model  string
		inputs []Tensor
		code   codes.Code
		want   []string
	}{
		{"unknown model", "no_such_model", events, codes.NotFound, []string{"no_such_model"}},
		{"wrong datatype", "anomaly", wrongType, codes.InvalidArgument, []string{"timestamp", "FP32", "FP64"}},
		{"missing input", "anomaly", missing, codes.InvalidArgument, []string{"user"}},
		{"wrong forecast datatype", "forecast", []Tensor{NewTensor("history", []int64{1, 3}, []float64{1, 2, 3})},
			codes.InvalidArgument, []string{"history", "FP64"}},
	}
	for _, tc := range cases {
		_, err := c.Infer(ctx, tc.model, tc.inputs)
		st, ok := status.FromError(err)
		if !ok || st.Code() != tc.code {
			t.Errorf("%s: error %v, want code %v", tc.name, err, tc.code)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(st.Message(), w) {
				t.Errorf("%s: message %q does not name %q", tc.name, st.Message(), w)
			}
		}
	}
	if _, err := c.ModelMetadata(ctx, "no_such_model", ""); status.Code(err) != codes.NotFound {
		t.Errorf("ModelMetadata of an unknown model: %v", err)
	}
}

func TestTargetGroundTruthAndPerformance(t *testing.T) {
	c, ctx := serverClient(t)
	history := hourlyHistory()
	id := fmt.Sprintf("go-sdk-truth-%d", time.Now().UnixNano())
	res, err := c.Infer(ctx, "forecast", []Tensor{
		NewTensor("history", []int64{1, int64(len(history))}, history),
		NewTensor("horizon", []int64{1, 1}, []int32{24}),
	}, RequestID(id))
	if err != nil {
		t.Fatal(err)
	}
	mean, err := Values[float32](res, "mean")
	if err != nil || len(mean) != 24 {
		t.Fatalf("mean %v %v", mean, err)
	}
	actual := make([]float64, len(mean)) // one per horizon step of the one row
	for i, m := range mean {
		actual[i] = float64(m) + 1
	}
	// A count that does not match the prediction (1 x 24) is refused, naming values, and credits nothing.
	if _, err := c.ReportGroundTruth(ctx, id, nil, actual[:3]); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), "values") {
		t.Errorf("3 values for 24 predicted: %v", err)
	}
	r, err := c.ReportGroundTruth(ctx, id, nil, actual)
	if err != nil {
		t.Fatal(err)
	}
	if r.GetModel() != "forecast" || r.GetVersion() == "" || r.GetRows() != 1 {
		t.Errorf("ReportGroundTruth = %v", r)
	}
	if _, err := c.ReportGroundTruth(ctx, id, nil, actual); status.Code(err) != codes.NotFound {
		t.Errorf("a second report of %s: %v, want NotFound (credited once)", id, err)
	}

	p, err := c.ModelPerformance(ctx, "forecast", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.GetModel() != "forecast" || p.GetVersion() != r.GetVersion() || p.GetKind() != "regression" ||
		p.GetSamples() < 24 || math.IsNaN(p.GetMae()) || math.IsInf(p.GetMae(), 0) || p.GetMae() < 0 ||
		math.IsNaN(p.GetRmse()) || !math.IsNaN(p.GetF1()) || len(p.GetSeries()) == 0 {
		t.Errorf("ModelPerformance(forecast) = %v", p)
	}
	if w, err := c.ModelPerformance(ctx, "forecast", r.GetVersion(), 3600); err != nil || w.GetSamples() < 24 ||
		math.IsNaN(w.GetMae()) {
		t.Errorf("ModelPerformance(forecast, %s, 3600) = %v, %v", r.GetVersion(), w, err)
	}
}

func TestTargetDrift(t *testing.T) {
	c, ctx := serverClient(t)
	d, err := c.Drift(ctx, "forecast", "")
	if err != nil {
		t.Fatal(err)
	}
	if d.GetModel() != "forecast" || d.GetVersion() == "" {
		t.Errorf("Drift(forecast) = %v", d)
	}
	switch {
	case d.GetEvaluatedAt() == 0: // never evaluated: nothing measured yet
		if !strings.Contains(d.GetReason(), "not evaluated") || d.GetRows() != 0 || len(d.GetFeatures()) != 0 {
			t.Errorf("Drift(forecast) never evaluated: %v", d)
		}
	case strings.Contains(d.GetReason(), "not evaluated"): // too few live rows at the last evaluation
		if d.GetDrifted() {
			t.Errorf("Drift(forecast) drifted without an evaluation: %v", d)
		}
	case d.GetRows() <= 0 || len(d.GetFeatures()) == 0:
		t.Errorf("Drift(forecast) evaluated without live rows or features: %v", d)
	}
}

func TestTargetModelQualityErrors(t *testing.T) {
	c, ctx := serverClient(t)
	check := func(name string, err error, code codes.Code, want string) {
		t.Helper()
		if st, _ := status.FromError(err); st.Code() != code || !strings.Contains(st.Message(), want) {
			t.Errorf("%s: %v, want %v naming %q", name, err, code, want)
		}
	}
	_, err := c.ReportGroundTruth(ctx, "go-sdk-never-sent", nil, []float64{1})
	check("unknown request id", err, codes.NotFound, "request_id")
	_, err = c.ModelPerformance(ctx, "no_such_model", "", 0)
	check("performance of an unknown model", err, codes.NotFound, "no_such_model")
	_, err = c.ModelPerformance(ctx, "forecast", "", -1)
	check("negative window", err, codes.InvalidArgument, "window_s")
	_, err = c.Drift(ctx, "no_such_model", "")
	check("drift of an unknown model", err, codes.NotFound, "no_such_model")
}
