package bridge

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Sessions (grpc-session.v1, docs/protocol.md "Sessions"): many calls of
// any exposed methods over one logical connection, carried by a WebSocket
// (session_ws.go) or by an event stream down and POSTs up (session_http.go),
// resumable after a cut, and reachable from every replica
// (session_forward.go). This file holds a session's state and its calls.

// Session defaults. Each SessionOptions field documents what zero means.
const (
	defaultSessionGrace       = 30 * time.Second
	defaultSessionMaxCalls    = 100
	defaultSessionsPerClient  = 8
	defaultSessionInFlight    = 1 << 20
	defaultSessionWindow      = 256 << 10
	defaultSessionPollTimeout = 20 * time.Second
	defaultSessionTokenTTL    = 24 * time.Hour
	defaultPeerRefresh        = 10 * time.Second
)

// Attributes of session log lines.
const (
	logKeyCarrier = "carrier"
	logKeyCalls   = "calls"
)

// sessionPath is the URL of every session request.
const sessionPath = "/_bridge/session"

// TransportSession is the transport of a call in a session, as passed to
// [Metrics] and written in logs.
const TransportSession = "session"

// Session carriers, as passed to [SessionMetrics].
const (
	// SessionCarrierWebSocket is a session over a WebSocket
	// (subprotocol grpc-session.v1).
	SessionCarrierWebSocket = "websocket"
	// SessionCarrierSSE is a session's downstream as an event stream.
	SessionCarrierSSE = "sse"
	// SessionCarrierPoll is a session's downstream by long polling.
	SessionCarrierPoll = "poll"
	// SessionCarrierHTTP is a session created by a POST, for the HTTP
	// carrier (event stream or polling down, POSTs up).
	SessionCarrierHTTP = "http"
)

// SessionOptions turn sessions on and set their limits ([WithSessions]).
type SessionOptions struct {
	// Keys sign and check session tokens (HMAC-SHA256): the first signs,
	// every one is accepted, so that a key rotates without a cut. Each is
	// at least 32 bytes. Replicas that forward to each other share them.
	// Required.
	Keys [][]byte
	// AdvertiseAddr is this replica's internal address, "ip:port", which
	// its tokens name as the session's owner, and at which the other
	// replicas reach it. Empty: the bridge runs alone (or behind sticky
	// load balancing) and serves only its own sessions.
	AdvertiseAddr string
	// Peers are where a session's owner may be: CIDRs ("10.0.0.0/8") or
	// DNS names (a headless Service), resolved every PeerRefresh. A
	// request for a session owned elsewhere is forwarded only to an owner
	// in this set, and forwarded requests are accepted only from it.
	// Empty: nothing is forwarded.
	Peers []string
	// PeerRefresh is how often DNS names in Peers are resolved again.
	// Zero: 10 s.
	PeerRefresh time.Duration
	// GracePeriod is how long a session lives without a downstream: after
	// a cut, the client reattaches within it and the calls go on; after
	// it, they end. Zero: 30 s.
	GracePeriod time.Duration
	// MaxCalls bounds the calls open at once in one session; an OPEN over
	// it ends that call with RESOURCE_EXHAUSTED. Zero: 100.
	MaxCalls int
	// MaxSessionsPerClient bounds the sessions open at once from one
	// client IP address. Zero: 8.
	MaxSessionsPerClient int
	// MaxBytesInFlight bounds the bytes sent to a client and not yet
	// acknowledged, per session: response messages wait beyond it. Zero:
	// 1 MiB.
	MaxBytesInFlight int
	// Window is each call's initial flow-control window, in bytes, in
	// each direction (unless the client's OPEN asks for another downstream
	// window). Zero: 256 KiB.
	Window int
	// PollTimeout is how long a poll waits for frames. Zero: 20 s.
	PollTimeout time.Duration
	// TokenTTL is how long a session token is valid; every downstream
	// attachment gets a fresh one. Zero: 24 h.
	TokenTTL time.Duration
}

// withDefaults checks o and fills in the defaults.
func (o SessionOptions) withDefaults() (SessionOptions, error) {
	var errs []error
	if len(o.Keys) == 0 {
		errs = append(errs, errors.New("sessions: no token key"))
	}
	for i, k := range o.Keys {
		if len(k) < minSessionKey {
			errs = append(errs, fmt.Errorf("sessions: token key %d is %d bytes, want at least %d", i+1, len(k), minSessionKey))
		}
	}
	if o.AdvertiseAddr != "" {
		if _, err := netip.ParseAddrPort(o.AdvertiseAddr); err != nil {
			errs = append(errs, fmt.Errorf("sessions: advertise address %q: want ip:port", o.AdvertiseAddr))
		}
	} else if len(o.Peers) > 0 {
		errs = append(errs, errors.New("sessions: peers without an advertise address"))
	}
	for _, v := range []int{o.MaxCalls, o.MaxSessionsPerClient, o.MaxBytesInFlight, o.Window} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("sessions: negative limit %d", v))
		}
	}
	for _, d := range []time.Duration{o.PeerRefresh, o.GracePeriod, o.PollTimeout, o.TokenTTL} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("sessions: negative duration %v", d))
		}
	}
	setDefault(&o.PeerRefresh, defaultPeerRefresh)
	setDefault(&o.GracePeriod, defaultSessionGrace)
	setDefault(&o.PollTimeout, defaultSessionPollTimeout)
	setDefault(&o.TokenTTL, defaultSessionTokenTTL)
	setDefault(&o.MaxCalls, defaultSessionMaxCalls)
	setDefault(&o.MaxSessionsPerClient, defaultSessionsPerClient)
	setDefault(&o.MaxBytesInFlight, defaultSessionInFlight)
	setDefault(&o.Window, defaultSessionWindow)
	return o, errors.Join(errs...)
}

func setDefault[T int | time.Duration](v *T, d T) {
	if *v == 0 {
		*v = d
	}
}

// sessionServer holds a handler's sessions.
type sessionServer struct {
	h       *Handler
	o       SessionOptions
	keys    tokenKeys
	peers   *peerSet
	fwd     *sessionForwarder
	metrics SessionMetrics

	mu       sync.Mutex
	byID     map[sessionID]*session
	byClient map[string]int
}

// newSessionServer returns nil when sessions are off.
func newSessionServer(h *Handler) (*sessionServer, error) {
	if h.cfg.sessions == nil {
		return nil, nil //nolint:nilnil // off
	}
	o, err := h.cfg.sessions.withDefaults()
	if err != nil {
		return nil, err
	}
	peers, err := newPeerSet(o.Peers, o.PeerRefresh)
	if err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	srv := &sessionServer{
		h: h, o: o, keys: tokenKeys(o.Keys), peers: peers,
		byID: make(map[sessionID]*session), byClient: make(map[string]int),
		metrics: noSessionMetrics{},
	}
	if sm, ok := h.cfg.metrics.(SessionMetrics); ok {
		srv.metrics = sm
	}
	srv.fwd = newSessionForwarder(srv)
	return srv, nil
}

// create admits and registers a new session for the request r of caller
// c, over carrier. On refusal it returns the HTTP status and the status.
func (srv *sessionServer) create(r *http.Request, c browserCaller, carrier string) (*session, int, *status.Status) {
	h := srv.h
	// A grpc-timeout header on the request that creates the session would
	// be no deadline of any one call: calls take theirs from OPEN.
	md, _, err := h.browserMetadata(r, c)
	if err != nil {
		return nil, http.StatusBadRequest, status.New(codes.InvalidArgument, err.Error())
	}
	client := h.clientIP(r)
	srv.mu.Lock()
	if srv.byClient[client] >= srv.o.MaxSessionsPerClient {
		srv.mu.Unlock()
		return nil, http.StatusTooManyRequests, status.Newf(codes.ResourceExhausted, "this client is at its limit of %d sessions", srv.o.MaxSessionsPerClient)
	}
	// A session counts as one stream toward the handler's limits and
	// keeps Shutdown waiting until it has ended.
	if a := h.streams.begin(client); a != admitted {
		srv.mu.Unlock()
		code, st := h.streams.refusal(a)
		return nil, code, st
	}
	s := newSession(srv, client, carrier, md, c.wildcard)
	srv.byID[s.id] = s
	srv.byClient[client]++
	srv.mu.Unlock()
	srv.metrics.SessionStarted(carrier)
	h.log.LogAttrs(r.Context(), slog.LevelDebug, "session started",
		slog.String(logKeyCarrier, carrier), slog.String(logKeyPeer, r.RemoteAddr))
	s.mu.Lock()
	s.startGraceLocked() // until a downstream attaches
	s.mu.Unlock()
	stop := context.AfterFunc(h.streams.drainCtx, func() {
		s.close(errDraining, status.New(codes.Unavailable, "the bridge is shutting down"))
	})
	s.mu.Lock()
	s.stopDrain = stop // finish reads it under mu: the drain may have begun already
	s.mu.Unlock()
	return s, 0, nil
}

func (srv *sessionServer) lookup(id sessionID) *session {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.byID[id]
}

// forget removes s from the sessions that requests find: from now on its
// token gets 404.
func (srv *sessionServer) forget(s *session) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	delete(srv.byID, s.id)
}

// release ends what create began, once every call of s has ended.
func (srv *sessionServer) release(s *session) {
	srv.mu.Lock()
	if srv.byClient[s.client]--; srv.byClient[s.client] <= 0 {
		delete(srv.byClient, s.client)
	}
	srv.mu.Unlock()
	srv.h.streams.end(s.client)
	srv.metrics.SessionEnded(s.carrier, s.callsTotal)
	srv.h.log.LogAttrs(context.Background(), slog.LevelDebug, "session ended",
		slog.String(logKeyCarrier, s.carrier), slog.Int(logKeyCalls, s.callsTotal),
		slog.String(logKeyReason, context.Cause(s.ctx).Error()))
}

// token is a fresh token for s.
func (srv *sessionServer) token(s *session) string {
	return srv.keys.sign(sessionToken{id: s.id, expiry: time.Now().Add(srv.o.TokenTTL), owner: srv.o.AdvertiseAddr})
}

// Why a session closed, besides errDraining.
var (
	errSessionGoaway    = errors.New("bridge: the client ended the session")
	errSessionGrace     = errors.New("bridge: no downstream within the grace period")
	errSessionViolation = errors.New("bridge: session protocol violation")
)

// session is one grpc-session.v1 session.
//
// Goroutines: each call has a receiver (run: NewStream, Header, RecvMsg)
// and a sender (sendLoop: SendMsg, CloseSend); the carrier that delivers
// upstream frames (a WebSocket reader, a POST handler) calls receive, one
// batch at a time (upMu); the carrier attached downstream writes what take
// gives it. Producers of downstream frames append them to out under mu;
// the writer takes them from there, so a slow or absent downstream never
// blocks anything but the producers that wait for flow-control credit.
type session struct {
	srv       *sessionServer
	id        sessionID
	client    string      // the creator's IP address, for the per-client limit
	carrier   string      // how it was created: for metrics
	md        metadata.MD // of every call, from the creating request
	noAmbient bool        // the page is admitted only by "*"
	// ctx is the parent of every call's context, cancelled with the
	// session's cause by close. A per-session object, hence a context
	// field.
	ctx       context.Context
	cancel    context.CancelCauseFunc
	stopDrain func() bool

	upMu     sync.Mutex // one upstream batch at a time
	recvSeq  uint64     // the last upstream frame taken
	lastCall uint64     // the highest call id opened

	mu         sync.Mutex
	room       sync.Cond // on mu: windows grew, acks came, calls ended, the session closed
	calls      map[uint64]*sessionCall
	callsTotal int
	sendSeq    uint64     // the last downstream seq assigned
	acked      uint64     // the last downstream seq the client acknowledged
	out        []outFrame // downstream sequenced frames not yet acknowledged, by seq
	outBytes   int
	ackSeq     uint64 // recvSeq, for the writer
	ackDue     bool
	pongs      [][]byte
	dl         *downstream // the downstream attached, or nil
	attaches   int
	fallbacks  uint8 // the fallback reasons recorded, a bit each (session_fallback.go)
	grace      *time.Timer
	closing    bool
	goaway     *status.Status // sent after the calls' STATUS frames, or nil
	final      bool           // every call has ended: the writer ends after what is left
	wg         sync.WaitGroup // call goroutines
}

// outFrame is one downstream sequenced frame, encoded.
type outFrame struct {
	seq  uint64
	data []byte
}

// downstream is one attachment of a carrier to a session's downstream.
type downstream struct {
	kind   string
	next   uint64        // the seq of the next frame to write
	wake   chan struct{} // a frame is ready
	gone   chan struct{} // closed when detached or replaced
	closed bool          // gone is closed; under the session's mu
	// replaced: another downstream took over (the WebSocket closes with
	// 4000 then).
	replaced   bool
	goawayDone bool // the GOAWAY was taken
}

func newSession(srv *sessionServer, client, carrier string, md metadata.MD, noAmbient bool) *session {
	ctx, cancel := context.WithCancelCause(context.Background())
	s := &session{
		srv: srv, id: newSessionID(), client: client, carrier: carrier,
		md: md, noAmbient: noAmbient,
		ctx: ctx, cancel: cancel, stopDrain: func() bool { return false },
		calls: make(map[uint64]*sessionCall),
	}
	s.room.L = &s.mu
	return s
}

// startGraceLocked starts the grace period of a session without a
// downstream.
func (s *session) startGraceLocked() {
	if s.closing {
		return
	}
	if s.grace != nil {
		s.grace.Stop()
	}
	s.grace = time.AfterFunc(s.srv.o.GracePeriod, func() { s.close(errSessionGrace, nil) })
}

// close ends the session once: it stops finding it, cancels every call
// with cause and, when every call has ended (each with its STATUS),
// queues goaway, when not nil, and releases the session.
func (s *session) close(cause error, goaway *status.Status) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.closing = true
	s.goaway = goaway
	if s.grace != nil {
		s.grace.Stop()
	}
	s.room.Broadcast()
	s.mu.Unlock()
	s.srv.forget(s)
	s.cancel(cause)
	// The calls end soon: their contexts are cancelled.
	go s.finish()
}

// finish is close's goroutine: it waits for the calls' goroutines.
func (s *session) finish() {
	s.wg.Wait()
	s.mu.Lock()
	s.final = true
	if s.grace != nil {
		s.grace.Stop()
	}
	s.wakeLocked()
	stopDrain := s.stopDrain
	s.mu.Unlock()
	stopDrain()
	s.srv.release(s)
}

func (s *session) wakeLocked() {
	if s.dl == nil {
		return
	}
	select {
	case s.dl.wake <- struct{}{}:
	default:
	}
}

// attach makes a new downstream of kind the session's, in place of the
// one before, after the client's acknowledgement ack, and returns it with
// its HELLO frame. The downstream starts with the first frame that is not
// acknowledged.
func (s *session) attach(kind string, ack uint64) (*downstream, []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ackLocked(ack); err != nil {
		return nil, nil, err
	}
	if old := s.dl; old != nil {
		old.replaced = true
		s.detachLocked(old)
	}
	if s.grace != nil {
		s.grace.Stop()
	}
	dl := &downstream{kind: kind, next: s.acked + 1, wake: make(chan struct{}, 1), gone: make(chan struct{})}
	s.dl = dl
	if s.attaches > 0 {
		s.srv.metrics.SessionResumed(kind)
		if kind != SessionCarrierPoll {
			s.srv.h.log.LogAttrs(context.Background(), slog.LevelDebug, "session downstream resumed",
				slog.String(logKeyCarrier, kind), slog.Uint64("ack", ack))
		}
	}
	s.attaches++
	return dl, s.helloLocked(), nil
}

func (s *session) helloLocked() []byte {
	o := s.srv.o
	return appendFrame(nil, sessionFrame{typ: frameHello, payload: appendHello(nil, helloPayload{
		token:      s.srv.token(s),
		ack:        s.ackSeq,
		maxCalls:   uint64(o.MaxCalls),
		window:     uint64(o.Window),
		maxMessage: uint64(s.srv.h.cfg.readMaxBytes), //nolint:gosec // positive
		graceMs:    uint64(o.GracePeriod.Milliseconds()),
	})})
}

// detach ends dl's attachment, when it is still the session's, and starts
// the grace period.
func (s *session) detach(dl *downstream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dl != dl {
		return
	}
	s.detachLocked(dl)
	if !s.final {
		s.startGraceLocked()
	}
}

func (s *session) detachLocked(dl *downstream) {
	if s.dl == dl {
		s.dl = nil
	}
	if !dl.closed {
		dl.closed = true
		close(dl.gone)
	}
}

// take returns what dl writes next: the ACK due, PONGs, the sequenced
// frames from dl.next on (up to about maxBytes) and, once every call has
// ended and everything is written, the GOAWAY. lastSeq is the last
// sequenced frame in it (0 for none). It waits for something up to wait
// and returns nothing when the time is up; done means dl is over
// (replaced, or the session ended and all of it is written).
func (s *session) take(dl *downstream, wait time.Duration, maxBytes int) (batch []byte, lastSeq uint64, done bool) {
	var timeout <-chan time.Time
	for {
		s.mu.Lock()
		if s.dl != dl {
			s.mu.Unlock()
			return nil, 0, true
		}
		batch, lastSeq = s.collectLocked(dl, maxBytes)
		over := s.final && dl.next > s.sendSeq && (s.goaway == nil || dl.goawayDone) && !s.ackDue && len(s.pongs) == 0
		s.mu.Unlock()
		if len(batch) > 0 {
			return batch, lastSeq, false
		}
		if over {
			return nil, 0, true
		}
		if timeout == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-dl.wake:
		case <-dl.gone:
			return nil, 0, true
		case <-timeout:
			return nil, 0, false
		}
	}
}

func (s *session) collectLocked(dl *downstream, maxBytes int) (batch []byte, lastSeq uint64) {
	if s.ackDue {
		s.ackDue = false
		batch = appendFrame(batch, sessionFrame{typ: frameAck, payload: binary.AppendUvarint(nil, s.ackSeq)})
	}
	for _, p := range s.pongs {
		batch = appendFrame(batch, sessionFrame{typ: framePong, payload: p})
	}
	s.pongs = s.pongs[:0]
	if len(s.out) > 0 {
		first := s.out[0].seq
		dl.next = max(dl.next, first)
		for i := dl.next - first; i < uint64(len(s.out)) && len(batch) < maxBytes; i++ {
			batch = append(batch, s.out[i].data...)
			lastSeq = s.out[i].seq
			dl.next = lastSeq + 1
		}
	}
	if s.final && s.goaway != nil && !dl.goawayDone && dl.next > s.sendSeq {
		dl.goawayDone = true
		batch = appendFrame(batch, sessionFrame{typ: frameGoaway, payload: marshalStatus(s.srv.h.codec, s.goaway, nil)})
	}
	return batch, lastSeq
}

// ackLocked takes the client's acknowledgement of every downstream frame
// up to ack.
func (s *session) ackLocked(ack uint64) error {
	if ack > s.sendSeq {
		return fmt.Errorf("acknowledgement of frame %d, but the last frame sent is %d", ack, s.sendSeq)
	}
	if ack <= s.acked {
		return nil
	}
	n := int(ack - s.acked) //nolint:gosec // at most len(s.out)
	for _, f := range s.out[:n] {
		s.outBytes -= len(f.data)
	}
	clear(s.out[:n]) // let the frames go
	s.out = s.out[n:]
	s.acked = ack
	s.room.Broadcast()
	return nil
}

// queueLocked appends a sequenced frame for call c and wakes the writer.
func (s *session) queueLocked(typ frameType, call uint64, payload []byte) {
	s.sendSeq++
	data := appendFrame(make([]byte, 0, len(payload)+16), sessionFrame{typ: typ, seq: s.sendSeq, call: call, payload: payload})
	s.out = append(s.out, outFrame{seq: s.sendSeq, data: data})
	s.outBytes += len(data)
	s.wakeLocked()
}

// statusOnly ends a call that never started (an OPEN refused) with st.
func (s *session) statusOnly(call uint64, st *status.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queueLocked(frameStatus, call, encodeStatus(s.srv.h.codec, st, nil))
}
