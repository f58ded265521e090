package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// Unary methods answered as plain JSON, as grpc-gateway answers them
// (docs/protocol.md, "Unary JSON"): the request comes from the URL and the
// body as for SSE, and the answer is 200 application/json with the
// response message in proto3 JSON, or the grpc-gateway HTTP status of the
// call's code with a JSON google.rpc.Status. A request whose Accept names
// text/event-stream gets the SSE answer instead, as EventSource asks.

const (
	headerAccept              = "Accept"
	headerAcceptEncoding      = "Accept-Encoding"
	headerContentLength       = "Content-Length"
	headerContentTypeOptions  = "X-Content-Type-Options"
	headerACExposeHeaders     = "Access-Control-Expose-Headers"
	mediaTypeEventStream      = "text/event-stream"
	contentTypeOptionsNoSniff = "nosniff"
)

// isUnary reports whether m takes one request and returns one response.
func (m *method) isUnary() bool {
	return !m.streamDesc.ServerStreams && !m.streamDesc.ClientStreams
}

// allowedMethods is the Allow header of m's gRPC path, OPTIONS aside.
func (m *method) allowedMethods() string {
	if m.safeGET {
		return "GET, POST"
	}
	return http.MethodPost
}

// hasNoSideEffects reports whether md is marked idempotency_level =
// NO_SIDE_EFFECTS, which makes a unary method safe to call with GET.
func hasNoSideEffects(md protoreflect.MethodDescriptor) bool {
	opts, _ := md.Options().(*descriptorpb.MethodOptions)
	return opts.GetIdempotencyLevel() == descriptorpb.MethodOptions_NO_SIDE_EFFECTS
}

// responseBodyPath resolves a google.api.http response_body, a dotted path
// of fields of msg. Every field but the last must be a singular message,
// so that the path names one value; the last may be any field.
func responseBodyPath(msg protoreflect.MessageDescriptor, fieldPath string) ([]protoreflect.FieldDescriptor, error) {
	names := strings.Split(fieldPath, ".")
	path := make([]protoreflect.FieldDescriptor, 0, len(names))
	for i, name := range names {
		if msg == nil {
			return nil, fmt.Errorf("%s is not a singular message field", path[i-1].FullName())
		}
		fd := msg.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return nil, fmt.Errorf("%s has no field %q", msg.FullName(), name)
		}
		path = append(path, fd)
		msg = nil
		if fd.Message() != nil && !fd.IsList() && !fd.IsMap() {
			msg = fd.Message()
		}
	}
	return path, nil
}

// callTransport is the transport that answers a request for m that is not
// a WebSocket handshake: unary JSON for a unary method, unless the
// request's Accept names text/event-stream; SSE for any other.
func callTransport(r *http.Request, m *method) string {
	if m.isUnary() && !acceptsEventStream(r.Header) {
		return TransportUnary
	}
	return TransportSSE
}

// acceptsEventStream reports whether the Accept header names
// text/event-stream with a quality above zero, as EventSource's does.
// Wildcards (*/*, text/*) do not name it: a client that takes anything gets
// the plain JSON answer.
func acceptsEventStream(h http.Header) bool {
	for _, line := range h.Values(headerAccept) {
		for part := range strings.SplitSeq(line, ",") {
			mt, params, err := mime.ParseMediaType(part)
			if err != nil || mt != mediaTypeEventStream {
				continue
			}
			if q, err := strconv.ParseFloat(params["q"], 64); err == nil && q <= 0 {
				continue // q=0: "not acceptable" (RFC 9110 section 12.4.2)
			}
			return true
		}
	}
	return false
}

// serveCall serves a call of m over transport, as callTransport chose it,
// for caller c that admitBrowser admitted.
func (h *Handler) serveCall(w http.ResponseWriter, r *http.Request, m *method, c browserCaller, transport string, pathParams map[string]string, b binding) {
	if transport == TransportUnary {
		h.serveUnary(w, r, m, c, pathParams, b)
		return
	}
	h.serveSSE(w, r, m, c, pathParams, b)
}

// refuseGET answers a GET for a unary method that may have side effects:
// a link or a cross-site <img> must never run a mutation.
func (h *Handler) refuseGET(w http.ResponseWriter, m *method) {
	w.Header().Set(headerAllow, http.MethodPost)
	h.writeError(w, http.StatusMethodNotAllowed, status.Newf(codes.Unimplemented,
		"%s may have side effects, so GET cannot call it: POST the request as JSON (GET calls only unary methods marked idempotency_level = NO_SIDE_EFFECTS or with a google.api.http get rule)",
		m.name))
}

// unaryResult is the outcome of one unary call.
type unaryResult struct {
	body            []byte         // the answer's JSON, from getSSEBuf; nil unless st is OK
	header, trailer metadata.MD    // the call's response metadata, unfiltered
	st              *status.Status // the call's final status
}

// serveUnary serves one call of the unary method m as plain JSON, for
// caller c that admitBrowser admitted. It runs on the handler goroutine
// from start to end: the call is bounded by grpc-timeout and ends when the
// browser leaves (the request's context), and the one write of the answer
// by the write timeout. It counts as a stream while it runs, for the
// concurrency limits and for Shutdown, which lets it finish: ending it
// could lose a response whose effects already happened.
func (h *Handler) serveUnary(w http.ResponseWriter, r *http.Request, m *method, c browserCaller, pathParams map[string]string, b binding) {
	start := time.Now()
	hdr := w.Header()
	// The same URL answers SSE to a request that asks for events.
	hdr.Add(headerVary, headerAccept)
	if m.compress.JSON {
		addVary(hdr, headerAcceptEncoding)
	}
	req, rerr := h.readRequest(w, r, m, pathParams, b)
	if rerr != nil {
		h.writeError(w, rerr.httpStatus, rerr.st)
		return
	}
	md, timeout, err := h.browserMetadata(r, c)
	if err != nil {
		h.writeError(w, http.StatusBadRequest, status.New(codes.InvalidArgument, err.Error()))
		return
	}
	client := h.clientIP(r)
	if a := h.streams.begin(client); a != admitted {
		code, st := h.streams.refusal(a)
		h.writeError(w, code, st)
		h.logStreamEnd(r.Context(), r.RemoteAddr, streamEnd{method: m.name, transport: TransportUnary, st: st, start: start})
		return
	}
	defer h.streams.end(client)
	obs := h.cfg.metrics.StreamStarted(m.name, TransportUnary, false)
	obs.MessageReceived(proto.Size(req))

	ctx, cancel := callContext(r.Context(), timeout)
	res := h.callUnary(ctx, m, b, req, md)
	cancel()
	defer putSSEBuf(res.body)

	h.setResponseMetadata(hdr, res.header, res.trailer)
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(h.cfg.writeTimeout))
	st, slow, messages := res.st, false, 0
	if st.Code() != codes.OK {
		h.writeStatus(w, st)
	} else {
		hdr.Set(headerContentType, contentTypeJSON)
		hdr.Set(headerContentTypeOptions, contentTypeOptionsNoSniff)
		body, gzipped := compressJSON(r, m, hdr, res.body)
		if gzipped {
			defer putSSEBuf(body)
		}
		hdr.Set(headerContentLength, strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		_, err := w.Write(body)
		if err == nil {
			err = rc.Flush() // so that a failed write is seen, and counted, here
		}
		if err != nil {
			// The backend's call succeeded, but the browser did not get
			// its answer: that is the ending to log and count.
			slow = errors.Is(err, os.ErrDeadlineExceeded)
			st = status.New(codes.Unavailable, writeError{err}.Error())
		} else {
			messages = 1
			obs.MessageSent(len(res.body))
		}
	}
	obs.StreamEnded(st.Code(), 0, slow)
	h.logStreamEnd(r.Context(), r.RemoteAddr, streamEnd{method: m.name, transport: TransportUnary, st: st, start: start, messages: messages})
}

// callUnary makes the call of m with req and returns its outcome, with the
// answer's JSON for an OK call.
func (h *Handler) callUnary(ctx context.Context, m *method, b binding, req proto.Message, md metadata.MD) unaryResult {
	// openServerStream and recvWire turn the upstream's errors into the
	// browser's statuses, in method.callStatus, as for SSE.
	stream, st := openServerStream(metadata.NewOutgoingContext(ctx, md), m, req)
	if st != nil {
		return unaryResult{st: st}
	}
	var f rawFrame
	defer f.free()
	// For a unary call grpc-go's RecvMsg reads the status too, so the
	// call has ended when it returns, and Header no longer blocks.
	wire, st := m.recvWire(stream, &f)
	res := unaryResult{trailer: stream.Trailer()}
	res.header, _ = stream.Header()
	if st != nil {
		res.st = st
		return res
	}
	body, err := h.unaryJSON(getSSEBuf(), m, b, wire)
	if err != nil {
		putSSEBuf(body)
		res.st = status.Convert(err)
		return res
	}
	res.body, res.st = body, status.New(codes.OK, "")
	return res
}

// unaryJSON appends the JSON answer of a unary call to dst: the response
// message, or only the value of the binding's response_body field.
func (h *Handler) unaryJSON(dst []byte, m *method, b binding, wire []byte) ([]byte, error) {
	if b.responseBody == nil {
		// The SSE path's encoder: wirejson from the wire bytes where it
		// can, protojson otherwise, and the same JSON either way.
		out, _, err := newResponseEncoder(h, m).encode(dst, wire, 1)
		return out, err
	}
	return h.responseBodyJSON(dst, m, b.responseBody, wire)
}

// responseBodyJSON appends the proto3 JSON of the value at path in the
// response wire, as grpc-gateway answers a binding with a response_body:
// a message field as that message (an unset one is {}), any other field as
// the value protojson writes for it in its message, its default when it is
// unset (null for an unset oneof member or proto3 optional field, which
// have none).
func (h *Handler) responseBodyJSON(dst []byte, m *method, path []protoreflect.FieldDescriptor, wire []byte) ([]byte, error) {
	resp := m.output.New()
	if err := unmarshalResponse(wire, resp.Interface()); err != nil {
		return dst, err
	}
	parent := resp
	for _, fd := range path[:len(path)-1] {
		parent = parent.Get(fd).Message()
	}
	fd := path[len(path)-1]
	if fd.Message() != nil && !fd.IsList() && !fd.IsMap() {
		out, err := h.codec.marshal.MarshalAppend(dst, parent.Get(fd).Message().Interface())
		if err != nil {
			return dst, status.Errorf(codes.Internal, "encode %s as JSON: %v", fd.FullName(), err)
		}
		return out, nil
	}
	// The field alone in a message of its type, encoded, and its member
	// taken out: protojson writes no bare values.
	only := parent.Type().New()
	opts := h.codec.marshal
	if parent.Has(fd) {
		only.Set(fd, parent.Get(fd))
	} else {
		opts.EmitUnpopulated = true // only has nothing else to emit but defaults
	}
	obj, err := opts.Marshal(only.Interface())
	if err != nil {
		return dst, status.Errorf(codes.Internal, "encode %s as JSON: %v", fd.FullName(), err)
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(obj, &members); err != nil {
		return dst, status.Errorf(codes.Internal, "encode %s as JSON: %v", fd.FullName(), err)
	}
	value, ok := members[fd.JSONName()]
	if !ok {
		return append(dst, "null"...), nil
	}
	buf := bytes.NewBuffer(dst)
	if err := json.Compact(buf, value); err != nil {
		return dst, status.Errorf(codes.Internal, "encode %s as JSON: %v", fd.FullName(), err)
	}
	return buf.Bytes(), nil
}

// unmarshalResponse decodes a response's wire bytes into msg, with the
// status the SSE path gives a response that does not decode. Decoding
// malformed map entries into a dynamic message can panic in protobuf-go:
// a backend's bad bytes must fail the call, not the process.
func unmarshalResponse(wire []byte, msg proto.Message) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = status.Errorf(codes.Internal, "grpc: failed to unmarshal the received message: %v", p)
		}
	}()
	if err := proto.Unmarshal(wire, msg); err != nil {
		return status.Errorf(codes.Internal, "grpc: failed to unmarshal the received message: %v", err)
	}
	return nil
}

// setResponseMetadata adds the allow-listed response metadata of a call to
// hdr under grpc-gateway's names: Grpc-Metadata-<key> for headers and
// Grpc-Trailer-<key> for trailers, binary (-bin) values in base64.
// grpc-gateway sends the trailers as HTTP trailers, which only a client
// that sends "TE: trailers" gets and no browser can read; a unary answer
// has them before its first byte, so here they are headers too. A page of
// another origin that CORS admits may read them.
func (h *Handler) setResponseMetadata(hdr http.Header, header, trailer metadata.MD) {
	var names []string
	for _, md := range []struct {
		prefix string
		md     metadata.MD
	}{{runtime.MetadataHeaderPrefix, header}, {runtime.MetadataTrailerPrefix, trailer}} {
		for key, values := range h.responseMD.responseMetadata(md.md) {
			name := http.CanonicalHeaderKey(md.prefix + key)
			for _, v := range values {
				// A value that is no valid header value (a line break)
				// must not split the answer's headers.
				if isPrintableASCII(v) {
					hdr.Add(name, v)
				}
			}
			names = append(names, name)
		}
	}
	if len(names) > 0 && hdr.Get(headerACAllowOrigin) != "" {
		hdr.Add(headerACExposeHeaders, strings.Join(names, ", "))
	}
}
