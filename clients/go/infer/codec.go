package infer

import (
	"fmt"

	protov1 "github.com/golang/protobuf/proto"
	"google.golang.org/protobuf/proto"
)

// codec marshals the generated messages (google.golang.org/protobuf, API v2) with the v2 runtime and any older
// message (such as the grpc.health.v1 stubs of some grpc-go builds) with github.com/golang/protobuf. grpc-go's
// default codec goes through github.com/golang/protobuf, whose v1.3 releases cannot marshal v2 messages with a
// oneof (InferParameter), so every call on a Client's connection uses this one instead (grpc.ForceCodec). Its name
// stays "proto": the wire format and content type are unchanged.
type codec struct{}

func (codec) Marshal(v interface{}) ([]byte, error) {
	switch m := v.(type) {
	case proto.Message:
		return proto.Marshal(m)
	case protov1.Message:
		return protov1.Marshal(m)
	}
	return nil, fmt.Errorf("infer: cannot marshal %T: not a protobuf message", v)
}

func (codec) Unmarshal(data []byte, v interface{}) error {
	switch m := v.(type) {
	case proto.Message:
		return proto.Unmarshal(data, m)
	case protov1.Message:
		return protov1.Unmarshal(data, m)
	}
	return fmt.Errorf("infer: cannot unmarshal into %T: not a protobuf message", v)
}

func (codec) Name() string { return "proto" }

// String makes codec a grpc.Codec as well, for servers built with grpc.CustomCodec (the tests' fake servers).
func (codec) String() string { return "proto" }
