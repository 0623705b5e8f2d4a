package infer

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/infer-serving/infer/clients/go/inferpb"
)

// Tensor is a named tensor in row-major order. Data holds its elements as one of:
//
//	[]bool     BOOL
//	[]uint8    UINT8         []int8     INT8
//	[]uint16   UINT16        []int16    INT16
//	[]uint32   UINT32        []int32    INT32
//	[]uint64   UINT64        []int64    INT64
//	[]float32  FP32          []float64  FP64
//	[][]byte   BYTES         []string   BYTES (inputs only: outputs decode to [][]byte)
//	[]uint16   FP16, BF16 (the raw 16-bit patterns, with Datatype set to "FP16" or "BF16")
//
// On inputs Datatype may be left empty: it follows from Data. Outputs always carry it.
type Tensor struct {
	Name     string
	Datatype string
	Shape    []int64
	Data     interface{}
}

// NewTensor is Tensor{Name: name, Shape: shape, Data: data}.
func NewTensor(name string, shape []int64, data interface{}) Tensor {
	return Tensor{Name: name, Shape: shape, Data: data}
}

// elementSize is the width in bytes of a fixed-size datatype; 0 for BYTES and unknown names.
func elementSize(datatype string) int {
	switch datatype {
	case "BOOL", "UINT8", "INT8":
		return 1
	case "UINT16", "INT16", "FP16", "BF16":
		return 2
	case "UINT32", "INT32", "FP32":
		return 4
	case "UINT64", "INT64", "FP64":
		return 8
	}
	return 0
}

// datatypeOf names the V2 datatype of a Data value and counts its elements.
func datatypeOf(data interface{}) (string, int, error) {
	switch v := data.(type) {
	case []bool:
		return "BOOL", len(v), nil
	case []uint8:
		return "UINT8", len(v), nil
	case []int8:
		return "INT8", len(v), nil
	case []uint16:
		return "UINT16", len(v), nil
	case []int16:
		return "INT16", len(v), nil
	case []uint32:
		return "UINT32", len(v), nil
	case []int32:
		return "INT32", len(v), nil
	case []uint64:
		return "UINT64", len(v), nil
	case []int64:
		return "INT64", len(v), nil
	case []float32:
		return "FP32", len(v), nil
	case []float64:
		return "FP64", len(v), nil
	case [][]byte:
		return "BYTES", len(v), nil
	case []string:
		return "BYTES", len(v), nil
	}
	return "", 0, fmt.Errorf("unsupported data type %T", data)
}

// elements is the number of elements a shape holds.
func elements(shape []int64) (int, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("shape %v has a negative dimension", shape)
		}
		if d != 0 && n > math.MaxInt32/d {
			return 0, fmt.Errorf("shape %v is too large", shape)
		}
		n *= d
	}
	return int(n), nil
}

// Encode returns t's V2 datatype and its little-endian raw bytes, as raw_input_contents carries them (BYTES
// elements each prefixed with their length as a 4-byte little-endian integer).
func Encode(t Tensor) (string, []byte, error) {
	datatype, n, err := datatypeOf(t.Data)
	if err != nil {
		return "", nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	if t.Datatype != "" && t.Datatype != datatype && !(datatype == "UINT16" && (t.Datatype == "FP16" || t.Datatype == "BF16")) {
		return "", nil, fmt.Errorf("tensor %q: datatype %s does not match data of type %T", t.Name, t.Datatype, t.Data)
	}
	if t.Datatype != "" {
		datatype = t.Datatype
	}
	want, err := elements(t.Shape)
	if err != nil {
		return "", nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	if want != n {
		return "", nil, fmt.Errorf("tensor %q: shape %v holds %d elements but data has %d", t.Name, t.Shape, want, n)
	}
	return datatype, encodeRaw(t.Data), nil
}

func encodeRaw(data interface{}) []byte {
	le := binary.LittleEndian
	switch v := data.(type) {
	case []bool:
		b := make([]byte, len(v))
		for i, x := range v {
			if x {
				b[i] = 1
			}
		}
		return b
	case []uint8:
		return append([]byte(nil), v...)
	case []int8:
		b := make([]byte, len(v))
		for i, x := range v {
			b[i] = byte(x)
		}
		return b
	case []uint16:
		b := make([]byte, 2*len(v))
		for i, x := range v {
			le.PutUint16(b[2*i:], x)
		}
		return b
	case []int16:
		b := make([]byte, 2*len(v))
		for i, x := range v {
			le.PutUint16(b[2*i:], uint16(x))
		}
		return b
	case []uint32:
		b := make([]byte, 4*len(v))
		for i, x := range v {
			le.PutUint32(b[4*i:], x)
		}
		return b
	case []int32:
		b := make([]byte, 4*len(v))
		for i, x := range v {
			le.PutUint32(b[4*i:], uint32(x))
		}
		return b
	case []float32:
		b := make([]byte, 4*len(v))
		for i, x := range v {
			le.PutUint32(b[4*i:], math.Float32bits(x))
		}
		return b
	case []uint64:
		b := make([]byte, 8*len(v))
		for i, x := range v {
			le.PutUint64(b[8*i:], x)
		}
		return b
	case []int64:
		b := make([]byte, 8*len(v))
		for i, x := range v {
			le.PutUint64(b[8*i:], uint64(x))
		}
		return b
	case []float64:
		b := make([]byte, 8*len(v))
		for i, x := range v {
			le.PutUint64(b[8*i:], math.Float64bits(x))
		}
		return b
	case [][]byte:
		return encodeBytes(len(v), func(i int) []byte { return v[i] })
	case []string:
		return encodeBytes(len(v), func(i int) []byte { return []byte(v[i]) })
	}
	panic(fmt.Sprintf("infer: encodeRaw: unchecked type %T", data))
}

func encodeBytes(n int, at func(int) []byte) []byte {
	size := 4 * n
	for i := 0; i < n; i++ {
		size += len(at(i))
	}
	b := make([]byte, 0, size)
	for i := 0; i < n; i++ {
		e := at(i)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e)))
		b = append(b, e...)
	}
	return b
}

// Decode turns raw little-endian bytes of the given datatype and shape into a Tensor with typed Data (BYTES as
// [][]byte, FP16 and BF16 as []uint16 bit patterns). The returned data does not alias raw.
func Decode(name, datatype string, shape []int64, raw []byte) (Tensor, error) {
	t := Tensor{Name: name, Datatype: datatype, Shape: append([]int64(nil), shape...)}
	n, err := elements(shape)
	if err != nil {
		return t, fmt.Errorf("tensor %q: %w", name, err)
	}
	if datatype == "BYTES" {
		t.Data, err = decodeBytes(raw, n)
		if err != nil {
			return t, fmt.Errorf("tensor %q: %w", name, err)
		}
		return t, nil
	}
	size := elementSize(datatype)
	if size == 0 {
		return t, fmt.Errorf("tensor %q: unknown datatype %q", name, datatype)
	}
	if len(raw) != n*size {
		return t, fmt.Errorf("tensor %q: %s %v needs %d bytes, got %d", name, datatype, shape, n*size, len(raw))
	}
	t.Data = decodeFixed(datatype, raw, n)
	return t, nil
}

func decodeFixed(datatype string, raw []byte, n int) interface{} {
	le := binary.LittleEndian
	switch datatype {
	case "BOOL":
		v := make([]bool, n)
		for i := range v {
			v[i] = raw[i] != 0
		}
		return v
	case "UINT8":
		return append(make([]uint8, 0, n), raw...)
	case "INT8":
		v := make([]int8, n)
		for i := range v {
			v[i] = int8(raw[i])
		}
		return v
	case "UINT16", "FP16", "BF16":
		v := make([]uint16, n)
		for i := range v {
			v[i] = le.Uint16(raw[2*i:])
		}
		return v
	case "INT16":
		v := make([]int16, n)
		for i := range v {
			v[i] = int16(le.Uint16(raw[2*i:]))
		}
		return v
	case "UINT32":
		v := make([]uint32, n)
		for i := range v {
			v[i] = le.Uint32(raw[4*i:])
		}
		return v
	case "INT32":
		v := make([]int32, n)
		for i := range v {
			v[i] = int32(le.Uint32(raw[4*i:]))
		}
		return v
	case "FP32":
		v := make([]float32, n)
		for i := range v {
			v[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
		}
		return v
	case "UINT64":
		v := make([]uint64, n)
		for i := range v {
			v[i] = le.Uint64(raw[8*i:])
		}
		return v
	case "INT64":
		v := make([]int64, n)
		for i := range v {
			v[i] = int64(le.Uint64(raw[8*i:]))
		}
		return v
	case "FP64":
		v := make([]float64, n)
		for i := range v {
			v[i] = math.Float64frombits(le.Uint64(raw[8*i:]))
		}
		return v
	}
	panic("infer: decodeFixed: unchecked datatype " + datatype)
}

func decodeBytes(raw []byte, n int) ([][]byte, error) {
	v := make([][]byte, n)
	off := 0
	for i := 0; i < n; i++ {
		if len(raw)-off < 4 {
			return nil, fmt.Errorf("BYTES element %d: truncated length prefix", i)
		}
		size := int(binary.LittleEndian.Uint32(raw[off:]))
		off += 4
		if size > len(raw)-off {
			return nil, fmt.Errorf("BYTES element %d: length %d past the end of the buffer", i, size)
		}
		v[i] = make([]byte, size)
		copy(v[i], raw[off:off+size])
		off += size
	}
	if off != len(raw) {
		return nil, fmt.Errorf("BYTES: %d bytes left after %d elements", len(raw)-off, n)
	}
	return v, nil
}

// decodeContents reads a tensor sent in typed contents instead of raw bytes.
func decodeContents(name, datatype string, shape []int64, c *inferpb.InferTensorContents) (Tensor, error) {
	t := Tensor{Name: name, Datatype: datatype, Shape: append([]int64(nil), shape...)}
	n, err := elements(shape)
	if err != nil {
		return t, fmt.Errorf("tensor %q: %w", name, err)
	}
	var got int
	switch datatype {
	case "BOOL":
		t.Data, got = append([]bool(nil), c.GetBoolContents()...), len(c.GetBoolContents())
	case "INT8", "INT16", "INT32":
		src := c.GetIntContents()
		got = len(src)
		t.Data = convertInts(datatype, src)
	case "UINT8", "UINT16", "UINT32":
		src := c.GetUintContents()
		got = len(src)
		t.Data = convertUints(datatype, src)
	case "INT64":
		t.Data, got = append([]int64(nil), c.GetInt64Contents()...), len(c.GetInt64Contents())
	case "UINT64":
		t.Data, got = append([]uint64(nil), c.GetUint64Contents()...), len(c.GetUint64Contents())
	case "FP32":
		t.Data, got = append([]float32(nil), c.GetFp32Contents()...), len(c.GetFp32Contents())
	case "FP64":
		t.Data, got = append([]float64(nil), c.GetFp64Contents()...), len(c.GetFp64Contents())
	case "BYTES":
		v := make([][]byte, len(c.GetBytesContents()))
		for i, b := range c.GetBytesContents() {
			v[i] = append([]byte(nil), b...)
		}
		t.Data, got = v, len(v)
	default:
		return t, fmt.Errorf("tensor %q: datatype %q cannot travel in typed contents", name, datatype)
	}
	if got != n {
		return t, fmt.Errorf("tensor %q: shape %v holds %d elements but contents have %d", name, shape, n, got)
	}
	return t, nil
}

func convertInts(datatype string, src []int32) interface{} {
	switch datatype {
	case "INT8":
		v := make([]int8, len(src))
		for i, x := range src {
			v[i] = int8(x)
		}
		return v
	case "INT16":
		v := make([]int16, len(src))
		for i, x := range src {
			v[i] = int16(x)
		}
		return v
	}
	return append([]int32(nil), src...)
}

func convertUints(datatype string, src []uint32) interface{} {
	switch datatype {
	case "UINT8":
		v := make([]uint8, len(src))
		for i, x := range src {
			v[i] = uint8(x)
		}
		return v
	case "UINT16":
		v := make([]uint16, len(src))
		for i, x := range src {
			v[i] = uint16(x)
		}
		return v
	}
	return append([]uint32(nil), src...)
}
