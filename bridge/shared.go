package bridge

import (
	"context"
	"encoding/binary"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Shared upstream calls (fan-out).
//
// A method with SSEOptions.Shared has a sharedHub. SSE streams of that
// method that ask for the same thing (the same request, the same forwarded
// metadata) subscribe to one sharedCall instead of opening a call each. One
// receiver goroutine per sharedCall reads the upstream stream, encodes each
// message once as a complete event and hands the same read-only bytes to
// every subscriber's bounded queue, without ever blocking: a subscriber
// whose queue is full is dropped. Each subscriber's stream goroutine
// writes its own queue with the usual SSE machinery (sseStream.relay), so a
// shared subscriber costs no goroutine besides that one.
//
// Hand-offs keep the sharing: each call keeps its last events in a
// replayWindow, so that a subscriber that comes back with a Last-Event-ID
// (after the maximum stream duration, a drop, or the drain of another
// replica) joins the live call with the events it missed; a resuming
// subscriber that finds no live call opens one at its id, which the others
// then join; and UpdateFiles hands the hub of an unchanged method on to
// the new schema (keepSharedHubs).

// sseItem is what a shared call's receiver hands to each subscriber: the
// backend's response headers, one message event, or the final status.
// Items are shared by the subscribers and read-only.
type sseItem struct {
	kind     sseItemKind
	data     []byte // JSON of the headers; a whole event for itemFrame
	size     int    // itemFrame: the size of the message's JSON
	id       string // itemFrame: the event's id ("" when it has none)
	st       *status.Status
	trailers metadata.MD
}

type sseItemKind uint8

const (
	itemHeaders sseItemKind = iota + 1
	itemFrame               // a message event, framed once for every subscriber
	itemStatus              // the final status
	itemDropped             // the subscriber fell behind: st is its final status
	itemHandOff             // the bridge drains: the stream ends with a retry hint, to resume elsewhere
)

// sharedKeyExcluded are the metadata keys that describe one HTTP request
// rather than the caller: the bridge's own forwarding headers and the
// per-request trace and correlation ids. They would make every key unique,
// so they are left out of the key, and for the same reason out of the
// shared call's metadata: a shared call belongs to no one request.
var sharedKeyExcluded = map[string]bool{
	mdForwardedFor:     true,
	mdForwardedHost:    true,
	"traceparent":      true,
	"tracestate":       true,
	"x-request-id":     true,
	"x-correlation-id": true,
}

// sharedKey identifies what a subscriber asks for. The method is implied:
// each method has its own hub.
type sharedKey struct {
	request  string // the request in deterministic protobuf encoding
	metadata string // the forwarded metadata, canonical (see sharedMetadata)
}

// sharedMetadata returns the metadata of a shared call built from a
// subscriber's request metadata, without the keys in sharedKeyExcluded,
// and its canonical form for the key: keys sorted, each with its values in
// order, every string length-prefixed so that no two different sets
// encode alike.
func sharedMetadata(md metadata.MD) (metadata.MD, string) {
	out := make(metadata.MD, len(md))
	keys := make([]string, 0, len(md))
	for k, vs := range md {
		if sharedKeyExcluded[k] {
			continue
		}
		out[k] = vs
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b []byte
	appendString := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	for _, k := range keys {
		appendString(k)
		b = binary.AppendUvarint(b, uint64(len(out[k])))
		for _, v := range out[k] {
			appendString(v)
		}
	}
	return out, string(b)
}

// sharedHub holds the live shared calls of one method. It is created with
// the method's routes, and handed on to the next routes when a schema swap
// leaves the method unchanged (keepSharedHubs); a changed method gets a new
// hub, and the calls in the old one run on until their subscribers leave.
type sharedHub struct {
	queueLen int // message events queued per subscriber before it is dropped
	replay   int // events each call keeps for resuming subscribers

	// mu guards calls and the subscriber-side fields of every sharedCall.
	// It is held only to look up, add or remove entries and to snapshot
	// subscribers, never across I/O or a channel operation that can block.
	mu    sync.Mutex
	calls map[sharedKey]*sharedCall
}

func newSharedHub(c *config) *sharedHub {
	replay := c.sharedReplay
	if replay == 0 {
		replay = defaultSharedReplay
	}
	return &sharedHub{queueLen: defaultSharedQueueLen, replay: replay, calls: make(map[sharedKey]*sharedCall)}
}

// sharedCall is one upstream call and its subscribers.
type sharedCall struct {
	hub    *sharedHub
	key    sharedKey
	cancel context.CancelCauseFunc // ends the upstream call; errDraining: with a hand-off
	done   chan struct{}           // closed when the receiver has returned
	drop   *sseItem                // what a dropped subscriber gets last

	// Guarded by hub.mu.
	subs    map[*sharedSub]struct{}
	changed bool     // subs changed since the receiver's last snapshot
	headers *sseItem // the headers event, once the backend sent headers
	window  replayWindow

	// Owned by the receiver goroutine.
	snapshot []*sharedSub
}

// sharedSub is one subscriber of a sharedCall. The receiver goroutine is
// the only sender on items and the only user of dropped; the subscriber's
// handler goroutine is the only receiver from items.
type sharedSub struct {
	call *sharedCall
	// items holds up to hub.queueLen events (more for a subscriber that
	// joined with a backlog: the backlog's length more) and one more
	// place, kept free for the last item (the final status, the hand-off
	// or the drop), so that the last item always fits without blocking
	// the receiver.
	items   chan *sseItem
	dropped bool
	// skip, when not 0, is the id of a subscriber that came back ahead of
	// the call (see replayWindow.ahead): it gets no message event until
	// one whose id is past it. Set before the receiver sees the
	// subscriber; the receiver's only after.
	skip uint64
}

// replayWindow is a shared call's last events, for subscribers that resume
// from one of them: a ring of at most size message items. base is the id
// of the event just before the oldest one held (evicted, or, for a call
// that a resuming subscriber opened, the id it was opened at), so a
// subscriber at base misses none of the window either; "" is no id.
type replayWindow struct {
	items []*sseItem // len <= size; the oldest at head once full
	head  int
	base  string
}

// push adds a message event, evicting the oldest one when the window holds
// size events already.
func (w *replayWindow) push(it *sseItem, size int) {
	if len(w.items) < size {
		w.items = append(w.items, it)
		return
	}
	w.base = w.items[w.head].id
	w.items[w.head] = it
	w.head = (w.head + 1) % len(w.items)
}

// after returns the events after the one with the given id, oldest first,
// and whether the window knows that id: the newest event that has it, or
// base. The slice is new; its items are shared and read-only.
func (w *replayWindow) after(id string) ([]*sseItem, bool) {
	if id == "" {
		return nil, false
	}
	n := len(w.items)
	for i := n - 1; i >= 0; i-- {
		if w.at(i).id == id {
			return w.slice(i+1, n), true
		}
	}
	if w.base == id {
		return w.slice(0, n), true
	}
	return nil, false
}

// ahead reports whether id is an integer cursor value past the call's
// newest event (or, before the first, past base) by at most limit: the
// position of a subscriber that comes from a call on another replica
// which ran a little ahead of this one. It returns the id as a number.
// Integer cursors are taken to increase from one event to the next.
func (w *replayWindow) ahead(id string, limit int) (uint64, bool) {
	head := w.base
	if len(w.items) > 0 {
		head = w.at(len(w.items) - 1).id
	}
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return 0, false
	}
	h, err := strconv.ParseUint(head, 10, 64)
	return n, err == nil && n > h && n-h <= uint64(limit)
}

// isUnsignedKind reports whether cursor values of kind k are unsigned
// integers, whose ids (decimal numbers) the bridge can order.
func isUnsignedKind(k protoreflect.Kind) bool {
	switch k {
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return true
	}
	return false
}

// at returns the i-th oldest event held.
func (w *replayWindow) at(i int) *sseItem { return w.items[(w.head+i)%len(w.items)] }

func (w *replayWindow) slice(from, to int) []*sseItem {
	out := make([]*sseItem, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, w.at(i))
	}
	return out
}

// subscribe adds a subscriber to the shared call of key, opening the call
// when there is none. req and md are the subscriber's request (resumed
// already) and its request metadata for the shared call (without
// per-request keys and without the resume's last-event-id); they become
// the call's when it opens it. lastID is the Last-Event-ID of a resuming
// subscriber, or "". A resuming subscriber joins a live call only when the
// call's replay window knows its id, and then gets the events after it
// first, so that it misses nothing and sees nothing twice, or, with an
// unsigned integer cursor, when its id is a little ahead of the call's
// (replayWindow.ahead), and then gets the events after its id as they
// come; when no call is live, it opens one resumed at its id, which later
// subscribers at the same id (or within the window) join. Ids name
// messages only with a cursor field: without one, a resuming subscriber
// always has a call of its own.
// subscribe returns nil when the subscriber must have a call of its own.
func (hub *sharedHub) subscribe(h *Handler, m *method, key sharedKey, req proto.Message, md metadata.MD, lastID string) *sharedSub {
	hub.mu.Lock()
	c := hub.calls[key]
	var (
		backlog []*sseItem
		skip    uint64
	)
	if lastID != "" {
		ok := m.cursor != nil
		if ok && c != nil {
			if backlog, ok = c.window.after(lastID); !ok && isUnsignedKind(m.cursor.Kind()) {
				skip, ok = c.window.ahead(lastID, hub.replay)
			}
		}
		if !ok {
			hub.mu.Unlock()
			return nil
		}
	}
	var open func()
	if c == nil {
		// The call's context is no subscriber's: the call outlives the
		// subscriber that opened it, and ends when the last one leaves, or
		// at the drain.
		ctx, cancel := context.WithCancelCause(context.Background())
		c = &sharedCall{
			hub:    hub,
			key:    key,
			cancel: cancel,
			done:   make(chan struct{}),
			drop: &sseItem{kind: itemDropped, st: status.Newf(codes.ResourceExhausted,
				"this client fell behind the shared stream of %s; reconnect to resume", m.name)},
			subs:   make(map[*sharedSub]struct{}),
			window: replayWindow{base: lastID},
		}
		if lastID != "" {
			// The call resumes where its opener left off, as the
			// opener's own call would have.
			md = md.Copy()
			md[mdLastEventID] = []string{lastID}
		}
		hub.calls[key] = c
		open = func() { go c.receive(ctx, h, m, req, md) }
	}
	size := hub.queueLen + len(backlog) + 1
	if c.headers != nil {
		size++
	}
	sub := &sharedSub{call: c, items: make(chan *sseItem, size), skip: skip}
	// The queue is new and has room for all of it.
	if c.headers != nil {
		sub.items <- c.headers
	}
	for _, it := range backlog {
		sub.items <- it
	}
	c.subs[sub] = struct{}{}
	c.changed = true
	hub.mu.Unlock()
	if open != nil {
		open()
	}
	return sub
}

// leave removes the subscriber. The last subscriber to leave ends the call
// and waits for its receiver to return.
func (sub *sharedSub) leave() {
	c := sub.call
	hub := c.hub
	hub.mu.Lock()
	delete(c.subs, sub)
	c.changed = true
	last := len(c.subs) == 0
	if last && hub.calls[c.key] == c {
		delete(hub.calls, c.key)
	}
	hub.mu.Unlock()
	if last {
		c.cancel(nil)
		<-c.done
	}
}

// receive is the call's receiver goroutine, the only one that uses the
// upstream stream. It opens the call, relays its headers, messages and
// final status to the subscribers, and returns when the call ends: by
// itself, because the last subscriber left and cancelled ctx, or at the
// drain, which ends every subscriber with a hand-off after the same last
// event, so that they all resume from the same id (and share one call
// again at the replica they reconnect to).
func (c *sharedCall) receive(ctx context.Context, h *Handler, m *method, req proto.Message, md metadata.MD) {
	defer close(c.done)
	defer c.cancel(nil)
	defer context.AfterFunc(h.streams.drainCtx, func() { c.cancel(errDraining) })()
	defer h.recoverStream(m.name, TransportSSE, func(st *status.Status) { c.end(&sseItem{kind: itemStatus, st: st}) })
	final := func(st *status.Status, trailers metadata.MD) *sseItem {
		if errors.Is(context.Cause(ctx), errDraining) {
			return &sseItem{kind: itemHandOff}
		}
		return &sseItem{kind: itemStatus, st: st, trailers: trailers}
	}
	ctx = metadata.NewOutgoingContext(ctx, md)
	stream, st := openServerStream(ctx, m, req)
	if st != nil {
		c.end(final(st, nil))
		return
	}
	if hdr, _ := stream.Header(); hdr != nil {
		c.publish(&sseItem{kind: itemHeaders, data: h.headersJSON(hdr)})
	}
	enc := newResponseEncoder(h, m)
	var (
		f    rawFrame
		seq  uint64
		json []byte // each message's JSON, copied into its frame
	)
	for {
		wire, st := m.recvWire(stream, &f)
		if st != nil {
			c.end(final(st, stream.Trailer()))
			return
		}
		// Ids number the call's events from 1 unless the method has a
		// cursor: a late subscriber sees them continue, not restart.
		seq++
		data, id, err := enc.encode(json[:0], wire, seq)
		f.free()
		json = data
		if err != nil {
			c.end(&sseItem{kind: itemStatus, st: status.Convert(err)})
			return
		}
		// The event is framed once; every subscriber writes these bytes.
		frame := appendEvent(make([]byte, 0, len(data)+len(id)+32), id, sseEventMessage, data)
		c.publish(&sseItem{kind: itemFrame, data: frame, size: len(data), id: id})
	}
}

// subscribers returns the current subscribers, for the receiver, and
// applies update under the hub's lock first.
func (c *sharedCall) subscribers(update func()) []*sharedSub {
	c.hub.mu.Lock()
	defer c.hub.mu.Unlock()
	update()
	if c.changed {
		c.changed = false
		c.snapshot = c.snapshot[:0]
		for s := range c.subs {
			c.snapshot = append(c.snapshot, s)
		}
	}
	return c.snapshot
}

// publish hands a headers or message event to every subscriber without
// blocking: a subscriber whose queue is full gets the drop item in the
// place kept free, and nothing after it. A message event enters the replay
// window under the same lock as the snapshot of subscribers is taken, so
// that a subscriber that joins meanwhile gets it from the window, and only
// from there.
func (c *sharedCall) publish(it *sseItem) {
	subs := c.subscribers(func() {
		if it.kind == itemHeaders {
			c.headers = it // for subscribers that join later
		} else {
			c.window.push(it, c.hub.replay)
		}
	})
	for _, s := range subs {
		if s.dropped {
			continue
		}
		if s.skip != 0 && it.kind == itemFrame {
			if n, err := strconv.ParseUint(it.id, 10, 64); err == nil && n <= s.skip {
				continue // the subscriber has this one already
			}
			s.skip = 0
		}
		// Only this goroutine sends on s.items, so the length can only
		// shrink between this check and the send.
		if len(s.items) >= cap(s.items)-1 {
			s.dropped = true
			s.items <- c.drop
			continue
		}
		s.items <- it
	}
}

// end hands the call's final status to every subscriber and removes the
// call from the hub, so that the next subscriber opens a new one.
func (c *sharedCall) end(it *sseItem) {
	subs := c.subscribers(func() {
		if c.hub.calls[c.key] == c {
			delete(c.hub.calls, c.key)
		}
	})
	for _, s := range subs {
		if s.dropped {
			continue
		}
		select {
		case s.items <- it: // the place kept free
		default: // cannot happen; never block the receiver
		}
	}
}

// sharedKeyOf returns the key of a request and the metadata its shared
// call would carry.
func sharedKeyOf(req proto.Message, md metadata.MD) (sharedKey, metadata.MD, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	if err != nil {
		return sharedKey{}, nil, err
	}
	callMD, canon := sharedMetadata(md)
	return sharedKey{request: string(b), metadata: canon}, callMD, nil
}

// methodKind names the streaming kind of md, for errors.
func methodKind(md protoreflect.MethodDescriptor) string {
	switch {
	case md.IsStreamingClient() && md.IsStreamingServer():
		return "bidirectional streaming"
	case md.IsStreamingClient():
		return "client-streaming"
	case md.IsStreamingServer():
		return "server-streaming"
	default:
		return "unary"
	}
}

// defaultSharedReplay is the replay window of a shared call: 128 events
// cover a reconnect after the default retry time (2 s) of a stream of up
// to 64 events a second, for 128 times the size of one event in memory per
// call (128 KiB at 1 KiB per event).
const defaultSharedReplay = 128

// WithSharedReplay sets how many of its last events each shared call keeps
// (see [SSEOptions.Shared]), so that a stream that resumes with a
// Last-Event-ID naming one of them (or the event just before them) joins
// the live call and gets exactly the events after that id, instead of
// opening a call of its own. The window costs up to n times the size of
// one event, per shared call (not per subscriber: the events are the ones
// every subscriber is sent). Size it to the events a stream receives while
// a browser reconnects: the retry time and a margin, times the event rate.
// Defaults to 128; zero means the default; negative is an error.
func WithSharedReplay(n int) Option {
	return optionFunc(func(c *config) { c.sharedReplay = n })
}

// keepSharedHubs hands the hub of each shared method of the old routes on
// to the same method in the new ones when the schema swap left the method
// unchanged (sameSharedMethod): new streams, and streams that resume after
// the swap, then join the calls that are live already. old may be nil.
// The new routes must not be in use yet.
func keepSharedHubs(old, rt *routes) {
	if old == nil {
		return
	}
	for p, m := range rt.byPath {
		if o := old.byPath[p]; o != nil && sameSharedMethod(o, m) {
			m.shared = o.shared
		}
	}
}

// sameSharedMethod reports whether two builds of a shared method make the
// same shared calls, so that a subscriber of one can join a call of the
// other and get what a call of its own would send: the same backend, the
// same cursor and resume fields, and request and response messages of the
// same shape (messageShape). Anything else (comments, other methods,
// unrelated messages of the file) may change.
func sameSharedMethod(a, b *method) bool {
	if a.shared == nil || b.shared == nil || a.name != b.name ||
		a.streamDesc.ServerStreams != b.streamDesc.ServerStreams || a.streamDesc.ClientStreams != b.streamDesc.ClientStreams ||
		!sameConn(a.conn, b.conn) || fieldName(a.cursor) != fieldName(b.cursor) || fieldName(a.resume) != fieldName(b.resume) {
		return false
	}
	return a.desc == b.desc || messageShape(a.desc) == messageShape(b.desc)
}

// sameConn compares backend connections, which are interface values: a
// type that is not comparable (never a *grpc.ClientConn) is never the same.
func sameConn(a, b grpc.ClientConnInterface) bool {
	ta := reflect.TypeOf(a)
	return ta != nil && ta == reflect.TypeOf(b) && ta.Comparable() && a == b
}

func fieldName(fd protoreflect.FieldDescriptor) protoreflect.Name {
	if fd == nil {
		return ""
	}
	return fd.Name()
}

// messageShape returns a canonical encoding of the method's request and
// response types and of every message and enum they reach through their
// fields: for each, by full name, its file's syntax and its descriptor
// proto (fields with their numbers, names, JSON names, types, labels and
// options; nested types; reserved ranges). Source comments and the rest
// of the file are not part of it. Equal shapes decode the same requests
// and encode the same JSON.
func messageShape(md protoreflect.MethodDescriptor) string {
	type entry struct {
		name protoreflect.FullName
		b    []byte
	}
	var (
		entries []entry
		seen    = make(map[protoreflect.FullName]bool)
		opts    = proto.MarshalOptions{Deterministic: true}
		add     func(d protoreflect.Descriptor)
	)
	add = func(d protoreflect.Descriptor) {
		if seen[d.FullName()] {
			return
		}
		seen[d.FullName()] = true
		var p proto.Message
		switch d := d.(type) {
		case protoreflect.MessageDescriptor:
			p = protodesc.ToDescriptorProto(d)
			fields := d.Fields()
			for i := range fields.Len() {
				if f := fields.Get(i); f.Message() != nil {
					add(f.Message())
				} else if f.Enum() != nil {
					add(f.Enum())
				}
			}
		case protoreflect.EnumDescriptor:
			p = protodesc.ToEnumDescriptorProto(d)
		}
		b, _ := opts.Marshal(p) // a descriptor proto always marshals
		b = append([]byte(d.ParentFile().Syntax().String()+"\x00"), b...)
		entries = append(entries, entry{d.FullName(), b})
	}
	add(md.Input())
	add(md.Output())
	slices.SortFunc(entries, func(x, y entry) int { return strings.Compare(string(x.name), string(y.name)) })
	var out []byte
	for _, s := range []string{string(md.Input().FullName()), string(md.Output().FullName())} {
		out = binary.AppendUvarint(out, uint64(len(s)))
		out = append(out, s...)
	}
	for _, e := range entries {
		out = binary.AppendUvarint(out, uint64(len(e.name)))
		out = append(out, e.name...)
		out = binary.AppendUvarint(out, uint64(len(e.b)))
		out = append(out, e.b...)
	}
	return string(out)
}
