package infer

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/infer-serving/infer/clients/go/inferpb"
)

func TestEncodeLittleEndian(t *testing.T) {
	cases := []struct {
		data     interface{}
		datatype string
		raw      []byte
	}{
		{[]bool{true, false}, "BOOL", []byte{1, 0}},
		{[]uint8{1, 255}, "UINT8", []byte{1, 255}},
		{[]int8{-1, 2}, "INT8", []byte{0xff, 2}},
		{[]uint16{0x0102, 3}, "UINT16", []byte{2, 1, 3, 0}},
		{[]int16{-2, 1}, "INT16", []byte{0xfe, 0xff, 1, 0}},
		{[]uint32{0x01020304, 5}, "UINT32", []byte{4, 3, 2, 1, 5, 0, 0, 0}},
		{[]int32{-1, 24}, "INT32", []byte{0xff, 0xff, 0xff, 0xff, 24, 0, 0, 0}},
		{[]uint64{1, 2}, "UINT64", []byte{1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0}},
		{[]int64{-2, 250000}, "INT64", []byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x90, 0xd0, 0x03, 0, 0, 0, 0, 0}},
		{[]float32{1, -2.5}, "FP32", []byte{0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0}},
		{[]float64{1, 0.5}, "FP64", []byte{0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0, 0, 0, 0, 0, 0, 0xe0, 0x3f}},
	}
	for _, c := range cases {
		datatype, raw, err := Encode(NewTensor("x", []int64{2}, c.data))
		if err != nil || datatype != c.datatype || !bytes.Equal(raw, c.raw) {
			t.Errorf("Encode(%T %v) = %s %v %v, want %s %v", c.data, c.data, datatype, raw, err, c.datatype, c.raw)
		}
	}
}

func TestEncodeBytesLengthPrefixed(t *testing.T) {
	want := []byte{5, 0, 0, 0, 'a', 'l', 'i', 'c', 'e', 0, 0, 0, 0, 3, 0, 0, 0, 'b', 'o', 'b'}
	for _, data := range []interface{}{[][]byte{[]byte("alice"), {}, []byte("bob")}, []string{"alice", "", "bob"}} {
		datatype, raw, err := Encode(NewTensor("user", []int64{3, 1}, data))
		if err != nil || datatype != "BYTES" || !bytes.Equal(raw, want) {
			t.Errorf("Encode(%T) = %s %v %v, want BYTES %v", data, datatype, raw, err, want)
		}
	}
}

func TestRoundTripEveryDatatype(t *testing.T) {
	shape := []int64{2, 3}
	datas := []interface{}{
		[]bool{true, false, true, true, false, false},
		[]uint8{0, 1, 2, 3, 254, 255},
		[]int8{-128, -1, 0, 1, 2, 127},
		[]uint16{0, 1, 2, 3, 4, 65535},
		[]int16{-32768, -1, 0, 1, 2, 32767},
		[]uint32{0, 1, 2, 3, 4, math.MaxUint32},
		[]int32{math.MinInt32, -1, 0, 1, 2, math.MaxInt32},
		[]uint64{0, 1, 2, 3, 4, math.MaxUint64},
		[]int64{math.MinInt64, -1, 0, 1, 2, math.MaxInt64},
		[]float32{0, -1.5, float32(math.Inf(1)), math.SmallestNonzeroFloat32, math.MaxFloat32, 3.25},
		[]float64{0, -1.5, math.Inf(-1), math.SmallestNonzeroFloat64, math.MaxFloat64, math.Pi},
		[][]byte{[]byte("a"), {}, []byte("\x00\xff"), []byte("longer element"), []byte("é"), []byte("z")},
	}
	for _, data := range datas {
		datatype, raw, err := Encode(NewTensor("x", shape, data))
		if err != nil {
			t.Fatalf("Encode(%T): %v", data, err)
		}
		got, err := Decode("x", datatype, shape, raw)
		if err != nil {
			t.Fatalf("Decode(%s): %v", datatype, err)
		}
		if got.Datatype != datatype || !reflect.DeepEqual(got.Shape, shape) || !reflect.DeepEqual(got.Data, data) {
			t.Errorf("round trip of %T: got %s %v %v", data, got.Datatype, got.Shape, got.Data)
		}
	}
}

func TestNaNSurvives(t *testing.T) {
	_, raw, _ := Encode(NewTensor("x", []int64{1}, []float32{float32(math.NaN())}))
	got, err := Decode("x", "FP32", []int64{1}, raw)
	if err != nil || !math.IsNaN(float64(got.Data.([]float32)[0])) {
		t.Fatalf("NaN round trip: %v %v", got.Data, err)
	}
}

func TestHalfPrecisionTravelsAsBits(t *testing.T) {
	in := Tensor{Name: "h", Datatype: "FP16", Shape: []int64{2}, Data: []uint16{0x3c00, 0xc000}} // 1.0, -2.0
	datatype, raw, err := Encode(in)
	if err != nil || datatype != "FP16" || !bytes.Equal(raw, []byte{0x00, 0x3c, 0x00, 0xc0}) {
		t.Fatalf("Encode FP16 = %s %v %v", datatype, raw, err)
	}
	out, err := Decode("h", "BF16", []int64{2}, raw)
	if err != nil || out.Datatype != "BF16" || !reflect.DeepEqual(out.Data, []uint16{0x3c00, 0xc000}) {
		t.Fatalf("Decode BF16 = %+v %v", out, err)
	}
}

func TestEncodeRefusesBadTensors(t *testing.T) {
	cases := []struct {
		tensor Tensor
		want   string
	}{
		{NewTensor("a", []int64{2, 2}, []float32{1, 2, 3}), "holds 4 elements but data has 3"},
		{NewTensor("b", []int64{-1}, []float32{1}), "negative dimension"},
		{NewTensor("c", []int64{1}, []complex64{1}), "unsupported data type []complex64"},
		{NewTensor("d", []int64{1}, nil), "unsupported data type <nil>"},
		{Tensor{Name: "e", Datatype: "FP64", Shape: []int64{1}, Data: []float32{1}}, "datatype FP64 does not match"},
	}
	for _, c := range cases {
		_, _, err := Encode(c.tensor)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.tensor.Name) {
			t.Errorf("Encode(%+v) error %v, want one naming %q and %q", c.tensor, err, c.tensor.Name, c.want)
		}
	}
}

func TestDecodeRefusesMalformedBuffers(t *testing.T) {
	cases := []struct {
		datatype string
		shape    []int64
		raw      []byte
		want     string
	}{
		{"FP32", []int64{2}, []byte{0, 0, 0, 0}, "needs 8 bytes, got 4"},
		{"INT64", []int64{1}, make([]byte, 9), "needs 8 bytes, got 9"},
		{"BYTES", []int64{1}, []byte{5, 0}, "truncated length prefix"},
		{"BYTES", []int64{1}, []byte{5, 0, 0, 0, 'a'}, "past the end"},
		{"BYTES", []int64{1}, []byte{1, 0, 0, 0, 'a', 'b'}, "1 bytes left after 1 elements"},
		{"COMPLEX", []int64{1}, nil, "unknown datatype"},
		{"FP32", []int64{-2}, nil, "negative dimension"},
	}
	for _, c := range cases {
		_, err := Decode("out", c.datatype, c.shape, c.raw)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), `"out"`) {
			t.Errorf("Decode(%s %v %v) error %v, want %q", c.datatype, c.shape, c.raw, err, c.want)
		}
	}
}

func TestDecodeDoesNotAliasTheBuffer(t *testing.T) {
	raw := []byte{1, 0, 0, 0, 'x', 7}
	b, _ := Decode("b", "BYTES", []int64{1}, raw[:5])
	u, _ := Decode("u", "UINT8", []int64{1}, raw[5:])
	raw[4], raw[5] = 'y', 8
	if string(b.Data.([][]byte)[0]) != "x" || u.Data.([]uint8)[0] != 7 {
		t.Fatalf("decoded data changed with the buffer: %v %v", b.Data, u.Data)
	}
}

func TestNewInferRequest(t *testing.T) {
	req, err := NewInferRequest("anomaly", []Tensor{
		NewTensor("timestamp", []int64{1, 1}, []float64{1.5}),
		NewTensor("user", []int64{1, 1}, []string{"alice"}),
	}, Version("2"), RequestID("r1"), Outputs("score", "severity"), Param("priority", 1), Param("key", "u1"),
		Param("flag", true), Param("x", 0.5), Param("n", uint64(3)))
	if err != nil {
		t.Fatal(err)
	}
	if req.ModelName != "anomaly" || req.ModelVersion != "2" || req.Id != "r1" || len(req.Outputs) != 2 ||
		req.Outputs[1].Name != "severity" {
		t.Errorf("request header: %v", req)
	}
	if in := req.Inputs[1]; in.Name != "user" || in.Datatype != "BYTES" || !reflect.DeepEqual(in.Shape, []int64{1, 1}) ||
		in.Contents != nil || !bytes.Equal(req.RawInputContents[1], []byte{5, 0, 0, 0, 'a', 'l', 'i', 'c', 'e'}) {
		t.Errorf("input user: %v raw %v", in, req.RawInputContents[1])
	}
	want := map[string]interface{}{"priority": int64(1), "key": "u1", "flag": true, "x": 0.5, "n": uint64(3)}
	if got := paramValues(req.Parameters); !reflect.DeepEqual(got, want) {
		t.Errorf("parameters %v, want %v", got, want)
	}
}

func TestNewInferRequestErrorsAreInvalidArgument(t *testing.T) {
	_, err := NewInferRequest("m", []Tensor{NewTensor("x", []int64{3}, []int32{1})})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `"x"`) {
		t.Errorf("shape mismatch: %v", err)
	}
	_, err = NewInferRequest("m", nil, Param("p", struct{}{}))
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `"p"`) {
		t.Errorf("bad parameter: %v", err)
	}
}

func TestDecodeResponseRawAndContents(t *testing.T) {
	_, score, _ := Encode(NewTensor("score", []int64{2, 1}, []float32{0.25, 0.75}))
	_, sev, _ := Encode(NewTensor("severity", []int64{2, 1}, []string{"NONE", "HIGH"}))
	resp := &inferpb.ModelInferResponse{
		ModelName: "anomaly", ModelVersion: "1", Id: "r1",
		Parameters: map[string]*inferpb.InferParameter{
			"cached": {ParameterChoice: &inferpb.InferParameter_BoolParam{BoolParam: true}}},
		Outputs: []*inferpb.ModelInferResponse_InferOutputTensor{
			{Name: "score", Datatype: "FP32", Shape: []int64{2, 1}},
			{Name: "severity", Datatype: "BYTES", Shape: []int64{2, 1}},
		},
		RawOutputContents: [][]byte{score, sev},
	}
	res, err := DecodeResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	if res.Model != "anomaly" || res.Version != "1" || res.ID != "r1" || res.Parameters["cached"] != true {
		t.Errorf("header %+v", res)
	}
	if v, err := Values[float32](res, "score"); err != nil || !reflect.DeepEqual(v, []float32{0.25, 0.75}) {
		t.Errorf("score %v %v", v, err)
	}
	if v, err := Values[string](res, "severity"); err != nil || !reflect.DeepEqual(v, []string{"NONE", "HIGH"}) {
		t.Errorf("severity %v %v", v, err)
	}
	if v, err := Values[[]byte](res, "severity"); err != nil || string(v[1]) != "HIGH" {
		t.Errorf("severity bytes %v %v", v, err)
	}
	if _, err := Values[float64](res, "score"); err == nil || !strings.Contains(err.Error(), "FP32") {
		t.Errorf("score as float64: %v", err)
	}
	if _, err := Values[float32](res, "nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("missing output: %v", err)
	}

	resp.RawOutputContents = nil
	resp.Outputs[0].Contents = &inferpb.InferTensorContents{Fp32Contents: []float32{1, 2}}
	resp.Outputs[1].Contents = &inferpb.InferTensorContents{BytesContents: [][]byte{[]byte("a"), []byte("b")}}
	res, err = DecodeResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := Values[float32](res, "score"); !reflect.DeepEqual(v, []float32{1, 2}) {
		t.Errorf("contents score %v", v)
	}
	resp.Outputs[0].Contents = &inferpb.InferTensorContents{Fp32Contents: []float32{1}}
	if _, err := DecodeResponse(resp); status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "score") {
		t.Errorf("short contents: %v", err)
	}
}

func TestDecodeContentsNarrowTypes(t *testing.T) {
	c := &inferpb.InferTensorContents{IntContents: []int32{-1, 2}, UintContents: []uint32{255, 3}}
	for datatype, want := range map[string]interface{}{
		"INT8": []int8{-1, 2}, "INT16": []int16{-1, 2}, "INT32": []int32{-1, 2},
		"UINT8": []uint8{255, 3}, "UINT16": []uint16{255, 3}, "UINT32": []uint32{255, 3},
	} {
		got, err := decodeContents("x", datatype, []int64{2}, c)
		if err != nil || !reflect.DeepEqual(got.Data, want) {
			t.Errorf("%s: %v %v", datatype, got.Data, err)
		}
	}
	if _, err := decodeContents("x", "FP16", []int64{2}, c); err == nil {
		t.Error("FP16 in contents accepted")
	}
}

func TestBackoffGrowsToItsCap(t *testing.T) {
	p := RetryPolicy{MaxAttempts: 6, InitialBackoff: 10, MaxBackoff: 50}
	var got []int64
	for a := 1; a <= 5; a++ {
		got = append(got, int64(p.backoff(a)))
	}
	if !reflect.DeepEqual(got, []int64{10, 20, 40, 50, 50}) {
		t.Errorf("backoff %v", got)
	}
	j := newJitter()
	for i := 0; i < 100; i++ {
		if d := j.draw(40); d < 20 || d > 40 {
			t.Fatalf("jitter %v outside [20, 40]", d)
		}
	}
}
