package bridge

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// queryParser maps query parameters and path parameters onto a request
// message with the rules of grpc-gateway's runtime.DefaultQueryParser
// (runtime/query.go, v2.33.0), which it follows line by line, with two
// differences:
//
//   - An enum value is looked up in the field's own enum descriptor.
//     grpc-gateway looks the enum up in protoregistry.GlobalTypes, where
//     only compiled-in enums are, so every enum of a schema loaded from a
//     descriptor set or from server reflection failed there.
//   - A key that goes through a repeated message field or a map field
//     ("items.name") says that such fields cannot be set from the URL,
//     rather than that the field "is not a message".
//
// grpc-gateway offers no hook for either (its enum lookup sits in an
// unexported function), and replacing its parser globally
// (runtime.SetQueryParameterParser) would change every ServeMux in the
// program. query_test.go checks that both parsers agree on compiled-in
// types and fuzzes this one.
type queryParser struct{}

// The bridge calls it directly, but it is a drop-in grpc-gateway parser.
var _ runtime.QueryParameterParser = queryParser{}

// mapKeyPattern is grpc-gateway's valuesKeyRegexp: a key field[key] sets
// the entry key of the map field.
var mapKeyPattern = regexp.MustCompile(`^(.*)\[(.*)\]$`)

// Parse populates msg from values. A value is ignored when its key starts
// with one of the field paths of filter (those a path parameter or the
// body sets), or names a field that contains one of them, and when it
// names no field (an extra parameter for someone else).
func (queryParser) Parse(msg proto.Message, values url.Values, filter *utilities.DoubleArray) error {
	// A field can be named by its proto name and its JSON name: a second
	// key for a field is an error, as a duplicate field in a JSON body is,
	// rather than map order picking the value that survives.
	seen := make(map[string]struct{}, len(values))
	for key, vals := range values {
		fieldKey, mapKey := key, ""
		if match := mapKeyPattern.FindStringSubmatch(key); len(match) == 3 {
			fieldKey, mapKey = match[1], "["+match[2]+"]"
			vals = append([]string{match[2]}, vals...)
		}
		m := msg.ProtoReflect()
		fieldPath := normalizeFieldPath(m, strings.Split(fieldKey, "."))
		if filter.HasCommonPrefix(fieldPath) || containsFilteredField(filter, fieldPath) {
			continue
		}
		field := strings.Join(fieldPath, ".") + mapKey
		if _, ok := seen[field]; ok {
			return fmt.Errorf("duplicate field %q", field)
		}
		seen[field] = struct{}{}
		if err := populatePath(m, fieldPath, vals, mapKey != "", "the query string"); err != nil {
			return err
		}
	}
	return nil
}

// populateFieldFromPath sets the field that the dotted fieldPath names, as
// runtime.PopulateFieldFromPath does for a path parameter, with the
// enums of any schema.
func populateFieldFromPath(msg proto.Message, fieldPath, value string) error {
	return populatePath(msg.ProtoReflect(), strings.Split(fieldPath, "."), []string{value}, false, "the path")
}

// containsFilteredField reports whether fieldPath names a field that
// contains one of the sequences in filter, such as "id" for a path
// parameter bound to "id.value": setting it from the query would replace
// the value already bound.
func containsFilteredField(filter *utilities.DoubleArray, fieldPath []string) bool {
	if len(filter.Base) == 0 {
		return false
	}
	var i int
	for _, t := range fieldPath {
		code, ok := filter.Encoding[t]
		if !ok {
			return false
		}
		j := filter.Base[i] + code
		if len(filter.Check) <= j || filter.Check[j] != i+1 {
			return false
		}
		i = j
	}
	return true
}

// normalizeFieldPath replaces JSON names in fieldPath by proto names, or
// returns fieldPath as it is when it does not name a field through
// singular messages.
func normalizeFieldPath(m protoreflect.Message, fieldPath []string) []string {
	out := make([]string, 0, len(fieldPath))
	for i, name := range fieldPath {
		fields := m.Descriptor().Fields()
		fd := fields.ByTextName(name)
		if fd == nil {
			fd = fields.ByJSONName(name)
		}
		if fd == nil {
			return fieldPath
		}
		out = append(out, string(fd.Name()))
		if i == len(fieldPath)-1 {
			break
		}
		if fd.Message() == nil || fd.Cardinality() == protoreflect.Repeated {
			return fieldPath
		}
		m = m.Get(fd).Message()
	}
	return out
}

// populatePath sets the field at fieldPath from values: one value for a
// singular field, any number for a repeated one, the entry key and its
// value for a map (hasMapKey: the key used field[key]). from names where
// the values came from, for errors.
func populatePath(m protoreflect.Message, fieldPath []string, values []string, hasMapKey bool, from string) error {
	if len(fieldPath) < 1 {
		return errors.New("no field path")
	}
	if len(values) < 1 {
		return errors.New("no value provided")
	}
	var fd protoreflect.FieldDescriptor
	for i, name := range fieldPath {
		fields := m.Descriptor().Fields()
		fd = fields.ByName(protoreflect.Name(name))
		if fd == nil {
			fd = fields.ByJSONName(name)
			if fd == nil {
				return nil // not a field: a parameter for someone else
			}
		}
		if of := fd.ContainingOneof(); of != nil && !of.IsSynthetic() {
			if set := m.WhichOneof(of); set != nil {
				if fd.Message() == nil || fd.FullName() != set.FullName() {
					return fmt.Errorf("field already set for oneof %q", of.FullName().Name())
				}
			}
		}
		if i == len(fieldPath)-1 {
			break
		}
		switch {
		case fd.IsMap():
			return fmt.Errorf("parameter %q: map fields cannot be set with a dotted path from %s; use %s[key]=value",
				strings.Join(fieldPath, "."), from, strings.Join(fieldPath[:i+1], "."))
		case fd.IsList() && fd.Message() != nil:
			return fmt.Errorf("parameter %q: repeated message fields cannot be set from %s", strings.Join(fieldPath, "."), from)
		case fd.Message() == nil:
			return fmt.Errorf("invalid path: %q is not a message", name)
		}
		m = m.Mutable(fd).Message()
	}
	// field[key]=value must name a map, or the key would be taken for a
	// value.
	if hasMapKey && !fd.IsMap() {
		return fmt.Errorf("field %q is not a map", fd.FullName().Name())
	}
	switch {
	case fd.IsList():
		list := m.Mutable(fd).List()
		for _, value := range values {
			v, err := parseQueryValue(fd, value)
			if err != nil {
				return fmt.Errorf("parsing list %q: %w", fd.FullName().Name(), err)
			}
			list.Append(v)
		}
		return nil
	case fd.IsMap():
		return populateMapEntry(fd, m.Mutable(fd).Map(), values)
	}
	if len(values) > 1 {
		return fmt.Errorf("too many values for field %q: %s", fd.FullName().Name(), strings.Join(values, ", "))
	}
	v, err := parseQueryValue(fd, values[0])
	if err != nil {
		return fmt.Errorf("parsing field %q: %w", fd.FullName().Name(), err)
	}
	m.Set(fd, v)
	return nil
}

// populateMapEntry sets one entry of a map field: values are its key and
// its value.
func populateMapEntry(fd protoreflect.FieldDescriptor, mp protoreflect.Map, values []string) error {
	if len(values) != 2 {
		return fmt.Errorf("more than one value provided for key %q in map %q", values[0], fd.FullName())
	}
	key, err := parseQueryValue(fd.MapKey(), values[0])
	if err != nil {
		return fmt.Errorf("parsing map key %q: %w", fd.FullName().Name(), err)
	}
	value, err := parseQueryValue(fd.MapValue(), values[1])
	if err != nil {
		return fmt.Errorf("parsing map value %q: %w", fd.FullName().Name(), err)
	}
	mp.Set(key.MapKey(), value)
	return nil
}

// parseQueryValue parses one value of a field of fd's kind.
func parseQueryValue(fd protoreflect.FieldDescriptor, value string) (protoreflect.Value, error) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		v, err := strconv.ParseBool(value)
		return protoreflect.ValueOfBool(v), err
	case protoreflect.EnumKind:
		return parseEnum(fd.Enum(), value)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		v, err := strconv.ParseInt(value, 10, 32)
		return protoreflect.ValueOfInt32(int32(v)), err
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		v, err := strconv.ParseInt(value, 10, 64)
		return protoreflect.ValueOfInt64(v), err
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		v, err := strconv.ParseUint(value, 10, 32)
		return protoreflect.ValueOfUint32(uint32(v)), err
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		v, err := strconv.ParseUint(value, 10, 64)
		return protoreflect.ValueOfUint64(v), err
	case protoreflect.FloatKind:
		v, err := runtime.Float32(value)
		return protoreflect.ValueOfFloat32(v), err
	case protoreflect.DoubleKind:
		v, err := runtime.Float64(value)
		return protoreflect.ValueOfFloat64(v), err
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(value), nil
	case protoreflect.BytesKind:
		v, err := runtime.Bytes(value)
		return protoreflect.ValueOfBytes(v), err
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return parseWellKnown(fd.Message(), value)
	default:
		return protoreflect.Value{}, fmt.Errorf("unsupported field kind %v", fd.Kind())
	}
}

// parseEnum parses an enum value by name or by number; the number must be
// one of the enum's.
func parseEnum(ed protoreflect.EnumDescriptor, value string) (protoreflect.Value, error) {
	v := ed.Values().ByName(protoreflect.Name(value))
	if v == nil {
		n, err := strconv.ParseInt(value, 10, 32)
		if err != nil {
			return protoreflect.Value{}, fmt.Errorf("%q is not a valid value", value)
		}
		if v = ed.Values().ByNumber(protoreflect.EnumNumber(n)); v == nil {
			return protoreflect.Value{}, fmt.Errorf("%q is not a valid value", value)
		}
	}
	return protoreflect.ValueOfEnum(v.Number()), nil
}

// parseWellKnown parses the value of a message field, which only the
// well-known types that grpc-gateway maps from a string can take.
func parseWellKnown(md protoreflect.MessageDescriptor, value string) (protoreflect.Value, error) {
	var msg proto.Message
	switch md.FullName() {
	case "google.protobuf.Timestamp":
		t, err := time.Parse(time.RFC3339Nano, value)
		if err != nil {
			return protoreflect.Value{}, err
		}
		ts := timestamppb.New(t)
		if !ts.IsValid() {
			return protoreflect.Value{}, fmt.Errorf("%s before 0001-01-01", value)
		}
		msg = ts
	case "google.protobuf.Duration":
		d, err := time.ParseDuration(value)
		if err != nil {
			return protoreflect.Value{}, err
		}
		msg = durationpb.New(d)
	case "google.protobuf.DoubleValue":
		v, err := runtime.Float64(value)
		if err != nil {
			return protoreflect.Value{}, err
		}
		msg = wrapperspb.Double(v)
	case "google.protobuf.FloatValue":
		v, err := runtime.Float32(value)
		if err != nil {
			return protoreflect.Value{}, err
		}
		msg = wrapperspb.Float(v)
	case "google.protobuf.Int64Value":
		v, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			return protoreflect.Value{}, err
		}
		msg = wrapperspb.Int64(v)
	case "google.protobuf.Int32Value":
		v, err := strconv.ParseInt(value, 10, 32)
		if err != nil {
			return protoreflect.Value{}, err
		}
		msg = wrapperspb.Int32(int32(v))
	case "google.protobuf.UInt64Value":
		v, err := strconv.ParseUint(value, 10, 64)
		if err != nil {
			return protoreflect.Value{}, err
		}
		msg = wrapperspb.UInt64(v)
	case "google.protobuf.UInt32Value":
		v, err := strconv.ParseUint(value, 10, 32)
		if err != nil {
			return protoreflect.Value{}, err
		}
		msg = wrapperspb.UInt32(uint32(v))
	case "google.protobuf.BoolValue":
		v, err := strconv.ParseBool(value)
		if err != nil {
			return protoreflect.Value{}, err
		}
		msg = wrapperspb.Bool(v)
	case "google.protobuf.StringValue":
		msg = wrapperspb.String(value)
	case "google.protobuf.BytesValue":
		v, err := runtime.Bytes(value)
		if err != nil {
			return protoreflect.Value{}, err
		}
		msg = wrapperspb.Bytes(v)
	case "google.protobuf.FieldMask":
		fm := &fieldmaskpb.FieldMask{}
		if value != "" {
			fm.Paths = strings.Split(value, ",")
		}
		msg = fm
	case "google.protobuf.Value":
		var v structpb.Value
		if err := protojson.Unmarshal([]byte(value), &v); err != nil {
			return protoreflect.Value{}, err
		}
		msg = &v
	case "google.protobuf.Struct":
		var v structpb.Struct
		if err := protojson.Unmarshal([]byte(value), &v); err != nil {
			return protoreflect.Value{}, err
		}
		msg = &v
	case "google.protobuf.Empty":
		// An Empty says only that the field is present.
		if value != "" && value != "{}" {
			return protoreflect.Value{}, fmt.Errorf("expected an empty value or %q, got %q", "{}", value)
		}
		msg = &emptypb.Empty{}
	default:
		return protoreflect.Value{}, fmt.Errorf("unsupported message type: %q", string(md.FullName()))
	}
	return protoreflect.ValueOfMessage(msg.ProtoReflect()), nil
}
