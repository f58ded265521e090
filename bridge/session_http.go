package bridge

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The session endpoint and its HTTP carrier: a POST creates a session, a
// GET is its downstream (an event stream of base64 frames, or one poll),
// a POST with sid carries frames up.

const (
	contentTypeOctetStream = "application/octet-stream"
	// headerSessionForwarded marks a request that a replica forwarded to
	// the session's owner (session_forward.go).
	headerSessionForwarded = "Grpc-Session-Forwarded"
	// sessionLogName stands for the method in logs of session requests.
	sessionLogName = "_bridge/session"
	// sseSessionBatch bounds the frames of one event (before base64), and
	// pollBatch those of one poll answer.
	sseSessionBatch = 48 << 10
	pollBatch       = 256 << 10
	// maxBodyOverhead is what an upstream POST may hold beyond one message
	// of the largest size: the frames' headers, control frames.
	maxBodyOverhead = 64 << 10
)

// serveHTTP serves every request for the session path.
func (srv *sessionServer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	h := srv.h
	if r.Method == http.MethodOptions {
		h.servePreflight(w, r, sessionLogName, "GET, POST")
		return
	}
	mark := r.Header.Get(headerSessionForwarded)
	forwarded := mark != ""
	var c browserCaller
	if forwarded {
		// The replica that forwarded it checked the origin; only a peer may
		// say that it did, with the mark that only replicas can make.
		if !srv.peers.containsRemote(r.Context(), r.RemoteAddr) {
			h.writeError(w, http.StatusForbidden, status.New(codes.PermissionDenied, "a forwarded session request must come from a peer"))
			return
		}
		if !srv.keys.forwardMarkValid(mark, r.URL.Query().Get("sid")) {
			h.writeError(w, http.StatusForbidden, status.New(codes.PermissionDenied, "the request's "+headerSessionForwarded+" is not a replica's"))
			return
		}
	} else {
		var ok bool
		if c, ok = h.admitBrowser(w, r, sessionLogName, TransportSession); !ok {
			return
		}
		h.setCORS(w, c)
	}
	upgrade := r.Method == http.MethodGet && websocket.IsWebSocketUpgrade(r)
	sid := r.URL.Query().Get("sid")
	if sid == "" {
		switch {
		case forwarded:
			h.writeError(w, http.StatusBadRequest, status.New(codes.InvalidArgument, "a forwarded session request needs sid"))
		case upgrade:
			srv.serveWebSocket(w, r, c, nil)
		case r.Method == http.MethodPost:
			srv.serveCreate(w, r, c)
		default:
			srv.refuseMethod(w, r)
		}
		return
	}
	tok, err := srv.keys.verify(sid, time.Now())
	switch {
	case errors.Is(err, errTokenMalformed):
		h.writeError(w, http.StatusBadRequest, status.New(codes.InvalidArgument, "sid is not a session token"))
		return
	case errors.Is(err, errTokenExpired):
		h.writeError(w, http.StatusForbidden, status.New(codes.PermissionDenied, "the session token has expired"))
		return
	case err != nil:
		h.writeError(w, http.StatusForbidden, status.New(codes.PermissionDenied, "the session token is not valid"))
		return
	}
	if tok.owner != srv.o.AdvertiseAddr {
		if forwarded {
			// Never forwarded twice: the peers disagree on who is who.
			h.writeError(w, http.StatusServiceUnavailable, status.New(codes.Unavailable, "the session's bridge is not this one"))
			return
		}
		srv.fwd.forward(w, r, tok.owner)
		return
	}
	s := srv.lookup(tok.id)
	if s == nil {
		h.writeError(w, http.StatusNotFound, status.New(codes.NotFound, "no such session: it has ended"))
		return
	}
	switch {
	case upgrade:
		srv.serveWebSocket(w, r, c, s)
	case r.Method == http.MethodGet:
		srv.serveDownstream(w, r, s)
	case r.Method == http.MethodPost:
		srv.serveUpstream(w, r, s)
	default:
		srv.refuseMethod(w, r)
	}
}

func (srv *sessionServer) refuseMethod(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(headerAllow, "GET, POST, OPTIONS")
	srv.h.writeError(w, http.StatusMethodNotAllowed, status.Newf(codes.Unimplemented, "HTTP method %s is not allowed at %s; use GET or POST", r.Method, sessionPath))
}

// downstreamAck is the client's acknowledgement on a reattach or a poll:
// the larger of ?ack= and Last-Event-ID, which EventSource sends itself.
func downstreamAck(r *http.Request) (uint64, *status.Status) {
	var ack uint64
	for _, v := range []string{r.URL.Query().Get("ack"), r.Header.Get(headerLastEventID)} {
		if v == "" {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, status.Newf(codes.InvalidArgument, "ack %s is not a sequence number", quoteName(v))
		}
		ack = max(ack, n)
	}
	return ack, nil
}

// serveCreate creates a session for the HTTP carrier: the answer is its
// HELLO.
func (srv *sessionServer) serveCreate(w http.ResponseWriter, r *http.Request, c browserCaller) {
	s, code, st := srv.create(r, c, SessionCarrierHTTP)
	if st != nil {
		srv.h.writeError(w, code, st)
		return
	}
	srv.recordFallback(r, s, SessionCarrierHTTP)
	s.mu.Lock()
	hello := s.helloLocked()
	s.mu.Unlock()
	writeFrames(w, hello)
}

func writeFrames(w http.ResponseWriter, b []byte) {
	hdr := w.Header()
	hdr.Set(headerContentType, contentTypeOctetStream)
	hdr.Set(headerCacheControl, "no-store")
	hdr.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// serveDownstream attaches an event stream or a poll to s.
func (srv *sessionServer) serveDownstream(w http.ResponseWriter, r *http.Request, s *session) {
	h := srv.h
	ack, st := downstreamAck(r)
	if st != nil {
		h.writeError(w, http.StatusBadRequest, st)
		return
	}
	poll := false
	if v := r.URL.Query().Get("poll"); v != "" {
		if poll, st = parsePoll(v); st != nil {
			h.writeError(w, http.StatusBadRequest, st)
			return
		}
	}
	kind := SessionCarrierSSE
	if poll {
		kind = SessionCarrierPoll
	}
	dl, hello, err := s.attach(kind, ack)
	if err != nil {
		h.writeError(w, http.StatusBadRequest, status.New(codes.InvalidArgument, err.Error()))
		return
	}
	defer s.detach(dl)
	srv.recordFallback(r, s, kind)
	// The browser gone, the downstream is cut: take returns.
	stop := context.AfterFunc(r.Context(), func() { s.detach(dl) })
	defer stop()
	if poll {
		batch, _, _ := s.take(dl, srv.o.PollTimeout, pollBatch)
		writeFrames(w, append(hello, batch...))
		return
	}
	// The event stream goes to an sseWire, as SSE calls do: over HTTP/1.1
	// the connection taken over from net/http (takeover.go), whose close
	// the shared poller reports, else the ResponseWriter.
	var wire sseWire = &responseWire{w: w, rc: http.NewResponseController(w)}
	if r.ProtoMajor == 1 && !h.cfg.sseNoHijack {
		if t, ok := hijack(w); ok {
			wire = t
			t.watch(func() { s.detach(dl) })
		}
	}
	defer wire.close()
	buf := wire.commit(nil)
	buf = strconv.AppendInt(append(buf, "retry: "...), h.cfg.retryInterval.Milliseconds(), 10)
	buf = appendSessionEvent(append(buf, "\n\n"...), hello, 0)
	lastHello := time.Now()
	for {
		if err := wire.write(buf, time.Now().Add(h.cfg.writeTimeout)); err != nil {
			return
		}
		batch, last, done := s.take(dl, h.cfg.heartbeatInterval, sseSessionBatch)
		switch {
		case done:
			return
		case len(batch) > 0:
			buf = appendSessionEvent(buf[:0], batch, last)
		default:
			buf = append(buf[:0], ssePing...)
		}
		if time.Since(lastHello) > srv.o.TokenTTL/2 {
			// A fresh token before the one the client holds expires.
			s.mu.Lock()
			buf = appendSessionEvent(buf, s.helloLocked(), 0)
			s.mu.Unlock()
			lastHello = time.Now()
		}
	}
}

func parsePoll(v string) (bool, *status.Status) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, status.Newf(codes.InvalidArgument, "poll %s: want 1 or 0", quoteName(v))
	}
	return b, nil
}

// appendSessionEvent appends one event of frames: an id (the last seq in
// it) when it has sequenced frames, and the frames in standard base64.
func appendSessionEvent(dst, frames []byte, lastSeq uint64) []byte {
	if lastSeq > 0 {
		dst = strconv.AppendUint(append(dst, "id: "...), lastSeq, 10)
		dst = append(dst, '\n')
	}
	dst = append(dst, "data: "...)
	dst = base64.StdEncoding.AppendEncode(dst, frames)
	return append(dst, "\n\n"...)
}

// serveUpstream takes a POST of frames; the answer is an ACK.
func (srv *sessionServer) serveUpstream(w http.ResponseWriter, r *http.Request, s *session) {
	h := srv.h
	if mt, _, err := mime.ParseMediaType(r.Header.Get(headerContentType)); err != nil || mt != contentTypeOctetStream {
		h.writeError(w, http.StatusUnsupportedMediaType, status.Newf(codes.InvalidArgument,
			"Content-Type %s is not supported; POST frames as %s", quoteName(r.Header.Get(headerContentType)), contentTypeOctetStream))
		return
	}
	limit := h.cfg.readMaxBytes + maxBodyOverhead
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			h.writeError(w, http.StatusRequestEntityTooLarge, status.Newf(codes.ResourceExhausted, "body larger than the limit of %d bytes", limit))
			return
		}
		h.writeError(w, http.StatusBadRequest, status.New(codes.InvalidArgument, "the body could not be read"))
		return
	}
	ack, err := s.receive(body)
	if err != nil {
		h.writeError(w, http.StatusBadRequest, status.New(codes.InvalidArgument, err.Error()))
		return
	}
	writeFrames(w, appendFrame(nil, sessionFrame{typ: frameAck, payload: binary.AppendUvarint(nil, ack)}))
}
