package goms

import (
	"fmt"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// The codecs of the remote bridge: message bytes cross from connect to
// grpc-go without being parsed.

// rawFrame is one message, kept as the bytes of the codec the caller
// chose.
type rawFrame struct {
	data []byte
	json bool
}

// rawConnectCodec is the connect side of the bridge: it hands message
// bytes over without parsing them. One instance stands for "proto", one for
// "json".
type rawConnectCodec struct{ json bool }

func (c rawConnectCodec) Name() string {
	if c.json {
		return "json"
	}
	return "proto"
}

func (c rawConnectCodec) Marshal(v any) ([]byte, error) {
	return c.MarshalAppend(nil, v)
}

// MarshalAppend appends a message's bytes; connect also marshals messages
// of its own with the codec named "proto" (a gRPC error's status), which
// are proto messages.
func (c rawConnectCodec) MarshalAppend(dst []byte, v any) ([]byte, error) {
	switch m := v.(type) {
	case *rawFrame:
		return append(dst, m.data...), nil
	case proto.Message:
		if c.json {
			return protojson.MarshalOptions{}.MarshalAppend(dst, m)
		}
		return proto.MarshalOptions{}.MarshalAppend(dst, m)
	}
	return nil, fmt.Errorf("goms: raw codec cannot marshal %T", v)
}

func (c rawConnectCodec) Unmarshal(data []byte, v any) error {
	f, ok := v.(*rawFrame)
	if !ok {
		if m, ok := v.(proto.Message); ok {
			if c.json {
				return protojson.Unmarshal(data, m)
			}
			return proto.Unmarshal(data, m)
		}
		return fmt.Errorf("goms: raw codec cannot unmarshal into %T", v)
	}
	// connect reuses its buffer once Unmarshal returns.
	f.data, f.json = append(f.data[:0], data...), c.json
	return nil
}

// rawGRPCCodec is the grpc-go side of the bridge; its name is the call's
// content-subtype. The proto codec has none: its calls are sent as plain
// application/grpc, which means proto, and grpc-go builds no content type
// for them.
type rawGRPCCodec struct{ name string }

var (
	grpcProtoCodec = rawGRPCCodec{name: ""}
	grpcJSONCodec  = rawGRPCCodec{name: "json"}
)

func (c rawGRPCCodec) Name() string { return c.name }

func (c rawGRPCCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*rawFrame)
	if !ok {
		return nil, fmt.Errorf("goms: raw codec cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(f.data)}, nil
}

func (c rawGRPCCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*rawFrame)
	if !ok {
		return fmt.Errorf("goms: raw codec cannot unmarshal into %T", v)
	}
	f.data = data.Materialize()
	return nil
}
