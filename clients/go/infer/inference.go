package infer

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/infer-serving/infer/clients/go/inferpb"
)

// InferOption adjusts one Infer request.
type InferOption func(*inferpb.ModelInferRequest) error

// Version asks for a model version ("" or no option: the newest ready one).
func Version(v string) InferOption {
	return func(r *inferpb.ModelInferRequest) error { r.ModelVersion = v; return nil }
}

// RequestID sets the request id, echoed in the response (and the key of control-plane outcome reports).
func RequestID(id string) InferOption {
	return func(r *inferpb.ModelInferRequest) error { r.Id = id; return nil }
}

// Outputs asks for these outputs only (default: all of them).
func Outputs(names ...string) InferOption {
	return func(r *inferpb.ModelInferRequest) error {
		for _, n := range names {
			r.Outputs = append(r.Outputs, &inferpb.ModelInferRequest_InferRequestedOutputTensor{Name: n})
		}
		return nil
	}
}

// Param sets a request parameter: value is a bool, int, int64, uint64, float64 or string (e.g. Param("priority",
// 1), Param("timeout", 5000) in microseconds, or the A/B routing key of a deployment).
func Param(key string, value interface{}) InferOption {
	return func(r *inferpb.ModelInferRequest) error {
		p := &inferpb.InferParameter{}
		switch v := value.(type) {
		case bool:
			p.ParameterChoice = &inferpb.InferParameter_BoolParam{BoolParam: v}
		case int:
			p.ParameterChoice = &inferpb.InferParameter_Int64Param{Int64Param: int64(v)}
		case int64:
			p.ParameterChoice = &inferpb.InferParameter_Int64Param{Int64Param: v}
		case uint64:
			p.ParameterChoice = &inferpb.InferParameter_Uint64Param{Uint64Param: v}
		case float64:
			p.ParameterChoice = &inferpb.InferParameter_DoubleParam{DoubleParam: v}
		case string:
			p.ParameterChoice = &inferpb.InferParameter_StringParam{StringParam: v}
		default:
			return fmt.Errorf("parameter %q: unsupported value type %T", key, value)
		}
		if r.Parameters == nil {
			r.Parameters = map[string]*inferpb.InferParameter{}
		}
		r.Parameters[key] = p
		return nil
	}
}

// Result is a decoded inference response.
type Result struct {
	Model      string
	Version    string
	ID         string
	Parameters map[string]interface{}
	// Outputs in the server's order, Data typed as Tensor describes.
	Outputs []Tensor
}

// Output returns the named output.
func (r *Result) Output(name string) (Tensor, bool) {
	for _, t := range r.Outputs {
		if t.Name == name {
			return t, true
		}
	}
	return Tensor{}, false
}

// Element is a Go type an output's elements can be read as with Values.
type Element interface {
	bool | int8 | int16 | int32 | int64 | uint8 | uint16 | uint32 | uint64 | float32 | float64 | []byte | string
}

// Values returns the named output's elements as []T, where T matches its datatype (string reads BYTES).
func Values[T Element](r *Result, name string) ([]T, error) {
	t, ok := r.Output(name)
	if !ok {
		return nil, fmt.Errorf("infer: no output %q in the response of model %q", name, r.Model)
	}
	if v, ok := t.Data.([]T); ok {
		return v, nil
	}
	if b, ok := t.Data.([][]byte); ok {
		var zero T
		if _, isString := any(zero).(string); isString {
			out := make([]T, len(b))
			for i, e := range b {
				out[i] = any(string(e)).(T)
			}
			return out, nil
		}
	}
	var zero T
	return nil, fmt.Errorf("infer: output %q is %s (%T), not read as %T", name, t.Datatype, t.Data, zero)
}

// Infer runs model on inputs. Each input travels as little-endian raw_input_contents; the outputs come back
// decoded. Errors from the server keep their gRPC status (status.Code(err)).
func (c *Client) Infer(ctx context.Context, model string, inputs []Tensor, opts ...InferOption) (*Result, error) {
	req, err := NewInferRequest(model, inputs, opts...)
	if err != nil {
		return nil, err
	}
	resp, err := c.infer.ModelInfer(ctx, req)
	if err != nil {
		return nil, err
	}
	return DecodeResponse(resp)
}

// NewInferRequest builds the ModelInferRequest Infer sends (for the generated stubs, e.g. ModelStreamInfer).
// Errors have codes.InvalidArgument.
func NewInferRequest(model string, inputs []Tensor, opts ...InferOption) (*inferpb.ModelInferRequest, error) {
	req := &inferpb.ModelInferRequest{
		ModelName:        model,
		Inputs:           make([]*inferpb.ModelInferRequest_InferInputTensor, len(inputs)),
		RawInputContents: make([][]byte, len(inputs)),
	}
	for i, t := range inputs {
		datatype, raw, err := Encode(t)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "infer: input %d: %v", i, err)
		}
		req.Inputs[i] = &inferpb.ModelInferRequest_InferInputTensor{
			Name: t.Name, Datatype: datatype, Shape: append([]int64(nil), t.Shape...)}
		req.RawInputContents[i] = raw
	}
	for _, opt := range opts {
		if err := opt(req); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "infer: %v", err)
		}
	}
	return req, nil
}

// DecodeResponse decodes a ModelInferResponse, raw_output_contents or typed contents. Errors have codes.Internal.
func DecodeResponse(resp *inferpb.ModelInferResponse) (*Result, error) {
	raw := resp.GetRawOutputContents()
	outs := resp.GetOutputs()
	if len(raw) != 0 && len(raw) != len(outs) {
		return nil, status.Errorf(codes.Internal, "infer: response has %d outputs but %d raw contents", len(outs), len(raw))
	}
	res := &Result{
		Model:      resp.GetModelName(),
		Version:    resp.GetModelVersion(),
		ID:         resp.GetId(),
		Parameters: paramValues(resp.GetParameters()),
		Outputs:    make([]Tensor, len(outs)),
	}
	for i, o := range outs {
		var err error
		if len(raw) != 0 {
			res.Outputs[i], err = Decode(o.GetName(), o.GetDatatype(), o.GetShape(), raw[i])
		} else {
			res.Outputs[i], err = decodeContents(o.GetName(), o.GetDatatype(), o.GetShape(), o.GetContents())
		}
		if err != nil {
			return nil, status.Errorf(codes.Internal, "infer: output %d: %v", i, err)
		}
	}
	return res, nil
}

func paramValues(params map[string]*inferpb.InferParameter) map[string]interface{} {
	if len(params) == 0 {
		return nil
	}
	out := make(map[string]interface{}, len(params))
	for k, p := range params {
		switch v := p.GetParameterChoice().(type) {
		case *inferpb.InferParameter_BoolParam:
			out[k] = v.BoolParam
		case *inferpb.InferParameter_Int64Param:
			out[k] = v.Int64Param
		case *inferpb.InferParameter_Uint64Param:
			out[k] = v.Uint64Param
		case *inferpb.InferParameter_DoubleParam:
			out[k] = v.DoubleParam
		case *inferpb.InferParameter_StringParam:
			out[k] = v.StringParam
		}
	}
	return out
}
