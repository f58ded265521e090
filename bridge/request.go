package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// requestError is an error in a browser's request, with the HTTP status it
// is answered with. Its status message names the problem.
type requestError struct {
	httpStatus int
	st         *status.Status
}

func (e *requestError) Error() string { return e.st.Message() }

func badRequest(format string, args ...any) *requestError {
	return &requestError{httpStatus: http.StatusBadRequest, st: status.Newf(codes.InvalidArgument, format, args...)}
}

// decodeRequest builds m's request message from an HTTP request: the path
// parameters of a google.api.http binding, the body (b.body "*": the whole
// message; a field path: that field), and the query string for every field
// that neither the path nor the body sets, with grpc-gateway's
// query-parameter rules.
func (h *Handler) decodeRequest(r *http.Request, m *method, pathParams map[string]string, b binding) (proto.Message, *requestError) {
	msg := m.input.New().Interface()
	if b.body != "" {
		if err := h.decodeBody(r, msg, b.body); err != nil {
			return nil, err
		}
	}
	for fieldPath, value := range pathParams {
		// protobuf strings are UTF-8: a message with anything else would
		// fail to marshal on its way to the backend, as an INTERNAL error.
		if !utf8.ValidString(value) {
			return nil, badRequest("path parameter %s is not valid UTF-8", fieldPath)
		}
		if err := populateFieldFromPath(msg, fieldPath, value); err != nil {
			return nil, badRequest("path parameter %s=%q: %v", fieldPath, value, err)
		}
	}
	if b.body != "*" && r.URL.RawQuery != "" {
		query, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return nil, badRequest("query string: %v", err)
		}
		for key, values := range query {
			if !utf8.ValidString(key) || slices.ContainsFunc(values, func(v string) bool { return !utf8.ValidString(v) }) {
				return nil, badRequest("query string: parameter %s is not valid UTF-8", quoteName(key))
			}
		}
		if err := populateQuery(msg, query, queryFilter(pathParams, b.body)); err != nil {
			return nil, badRequest("query string: %v", err)
		}
	}
	return msg, nil
}

// readRequest is decodeRequest under a read deadline. A body that trickles
// in must not hold the handler without bound: it has the write timeout to
// arrive. The deadline is cleared after a good read, since over HTTP/1.1
// the server's read that notices a closed connection uses it too; after a
// bad one it stays, so that net/http's attempt to drain the rest of the
// body fails at once.
func (h *Handler) readRequest(w http.ResponseWriter, r *http.Request, m *method, pathParams map[string]string, b binding) (proto.Message, *requestError) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(h.cfg.writeTimeout))
	req, rerr := h.decodeRequest(r, m, pathParams, b)
	if rerr == nil {
		_ = rc.SetReadDeadline(time.Time{})
	}
	return req, rerr
}

// decodeBody reads a JSON body, bounded by the read limit, into msg or into
// the field that fieldPath names.
func (h *Handler) decodeBody(r *http.Request, msg proto.Message, fieldPath string) *requestError {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, h.cfg.readMaxBytes))
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return &requestError{
				httpStatus: http.StatusRequestEntityTooLarge,
				st:         status.Newf(codes.ResourceExhausted, "request body is larger than the limit of %d bytes", h.cfg.readMaxBytes),
			}
		}
		return badRequest("read request body: %v", err)
	}
	// An empty body is the empty message, as grpc-gateway reads it (its
	// decoder's io.EOF is not an error).
	if len(body) == 0 {
		return nil
	}
	target := proto.Message(msg)
	if fieldPath != "*" {
		target = mutableField(msg, fieldPath)
	}
	if err := h.codec.unmarshal.Unmarshal(body, target); err != nil {
		return badRequest("request body: %v", err)
	}
	return nil
}

// mutableField returns the message held by the singular message field at
// fieldPath, creating it. [checkBodyField] has checked the path when the
// routes were built.
func mutableField(msg protoreflect.ProtoMessage, fieldPath string) proto.Message {
	m := msg.ProtoReflect()
	for _, name := range strings.Split(fieldPath, ".") {
		m = m.Mutable(m.Descriptor().Fields().ByName(protoreflect.Name(name))).Message()
	}
	return m.Interface()
}

// populateQuery applies grpc-gateway's query-parameter rules, with the
// enums of any schema (queryParser). The parser reports what it cannot
// parse as errors, but a schema it does not expect could still make
// protobuf-go panic; a request must never take the process down.
func populateQuery(msg proto.Message, query url.Values, filter *utilities.DoubleArray) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("cannot map the query string onto %s", msg.ProtoReflect().Descriptor().FullName())
		}
	}()
	return queryParser{}.Parse(msg, query, filter)
}

// setScalar parses value as the scalar field fd of msg, with the same rules
// as a query parameter, and sets it. The error names only the reason, such
// as "invalid syntax".
func setScalar(msg proto.Message, fd protoreflect.FieldDescriptor, value string) error {
	err := populateFieldFromPath(msg, string(fd.Name()), value)
	var numErr *strconv.NumError
	if errors.As(err, &numErr) {
		return numErr.Err
	}
	return err
}

// noTimeout is the timeout of a call without a grpc-timeout: none. It is
// not zero, because "0S" is a timeout that has already passed, as gRPC
// servers treat it.
const noTimeout time.Duration = -1

// callContext derives the context of one upstream call from the request's:
// cancelled when the browser leaves, and bounded by a grpc-timeout header
// unless timeout is noTimeout.
func callContext(parent context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout != noTimeout {
		return context.WithTimeout(parent, timeout)
	}
	return context.WithCancel(parent)
}
