package bridge

import (
	"errors"
	"sync/atomic"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// codec is the one place that holds the proto3 JSON options. Browsers get
// the canonical mapping: lowerCamelCase names, default values omitted, 64-bit
// integers as strings. Request JSON is strict: an unknown field is an error
// that names it, not something silently dropped.
type codec struct {
	types     *typeResolver
	marshal   protojson.MarshalOptions
	unmarshal protojson.UnmarshalOptions
}

func newCodec(files *protoregistry.Files) *codec {
	types := &typeResolver{}
	types.setSchema(files)
	return &codec{
		types:     types,
		marshal:   protojson.MarshalOptions{Resolver: types},
		unmarshal: protojson.UnmarshalOptions{Resolver: types},
	}
}

// typeResolver finds message and extension types (for google.protobuf.Any
// values and status details) in the schema first, then among the types
// compiled into the program, such as the google.rpc error details.
type typeResolver struct {
	current atomic.Pointer[dynamicpb.Types]
}

func (t *typeResolver) setSchema(files *protoregistry.Files) {
	t.current.Store(dynamicpb.NewTypes(files))
}

func (t *typeResolver) FindMessageByName(name protoreflect.FullName) (protoreflect.MessageType, error) {
	mt, err := t.current.Load().FindMessageByName(name)
	if errors.Is(err, protoregistry.NotFound) {
		return protoregistry.GlobalTypes.FindMessageByName(name)
	}
	return mt, err
}

func (t *typeResolver) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	mt, err := t.current.Load().FindMessageByURL(url)
	if errors.Is(err, protoregistry.NotFound) {
		return protoregistry.GlobalTypes.FindMessageByURL(url)
	}
	return mt, err
}

func (t *typeResolver) FindExtensionByName(field protoreflect.FullName) (protoreflect.ExtensionType, error) {
	xt, err := t.current.Load().FindExtensionByName(field)
	if errors.Is(err, protoregistry.NotFound) {
		return protoregistry.GlobalTypes.FindExtensionByName(field)
	}
	return xt, err
}

func (t *typeResolver) FindExtensionByNumber(message protoreflect.FullName, field protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	xt, err := t.current.Load().FindExtensionByNumber(message, field)
	if errors.Is(err, protoregistry.NotFound) {
		return protoregistry.GlobalTypes.FindExtensionByNumber(message, field)
	}
	return xt, err
}

// explainDecodeError returns the error of decoding data as a message of d
// in the words of the dynamic decoder, which names the field at fault
// ("field demo.v1.EchoRequest.text contains invalid UTF-8"), where a
// generated type's fast path only says "string field contains invalid
// UTF-8". It runs on the error path only.
func explainDecodeError(d protoreflect.MessageDescriptor, data []byte, err error) error {
	if derr := proto.Unmarshal(data, dynamicpb.NewMessage(d)); derr != nil {
		return derr
	}
	return err
}
