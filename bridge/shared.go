package bridge

import (
	"context"
	"encoding/binary"
	"slices"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
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

// sseItem is what a shared call's receiver hands to each subscriber: the
// backend's response headers, one message event, or the final status.
// Items are shared by the subscribers and read-only.
type sseItem struct {
	kind     sseItemKind
	data     []byte // JSON of the headers; a whole event for itemFrame
	size     int    // itemFrame: the size of the message's JSON
	st       *status.Status
	trailers metadata.MD
}

type sseItemKind uint8

const (
	itemHeaders sseItemKind = iota + 1
	itemFrame               // a message event, framed once for every subscriber
	itemStatus              // the final status
	itemDropped             // the subscriber fell behind: st is its final status
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
// the method's routes; after a schema swap, new subscribers reach the new
// method and its new hub, while calls in the old hub run on until their
// subscribers leave.
type sharedHub struct {
	queueLen int // message events queued per subscriber before it is dropped

	// mu guards calls and the subscriber-side fields of every sharedCall.
	// It is held only to look up, add or remove entries and to snapshot
	// subscribers, never across I/O or a channel operation that can block.
	mu    sync.Mutex
	calls map[sharedKey]*sharedCall
}

func newSharedHub() *sharedHub {
	return &sharedHub{queueLen: defaultSharedQueueLen, calls: make(map[sharedKey]*sharedCall)}
}

// sharedCall is one upstream call and its subscribers.
type sharedCall struct {
	hub    *sharedHub
	key    sharedKey
	cancel context.CancelFunc // ends the upstream call
	done   chan struct{}      // closed when the receiver has returned
	drop   *sseItem           // what a dropped subscriber gets last

	// Guarded by hub.mu.
	subs    map[*sharedSub]struct{}
	changed bool     // subs changed since the receiver's last snapshot
	headers *sseItem // the headers event, once the backend sent headers
	lastID  string   // the id of the last message event delivered

	// Owned by the receiver goroutine.
	snapshot []*sharedSub
}

// sharedSub is one subscriber of a sharedCall. The receiver goroutine is
// the only sender on items and the only user of dropped; the subscriber's
// handler goroutine is the only receiver from items.
type sharedSub struct {
	call *sharedCall
	// items holds up to hub.queueLen events and one more place, kept free
	// for the last item (the final status, or the drop), so that the last
	// item always fits without blocking the receiver.
	items   chan *sseItem
	dropped bool
}

// subscribe adds a subscriber to the shared call of key, opening the call
// when there is none. req and md are the subscriber's request and request
// metadata (before a resume is applied); they become the call's when it
// opens it. lastID is the Last-Event-ID of a resuming subscriber, or "": a
// resuming subscriber joins only a live call whose last event has exactly
// that id (which needs a cursor field, so that ids name messages), and
// never opens one. subscribe returns nil when the subscriber must have a
// call of its own.
func (hub *sharedHub) subscribe(h *Handler, m *method, key sharedKey, req proto.Message, md metadata.MD, lastID string) *sharedSub {
	sub := &sharedSub{items: make(chan *sseItem, hub.queueLen+1)}
	hub.mu.Lock()
	c := hub.calls[key]
	if lastID != "" && (c == nil || m.cursor == nil || c.lastID != lastID) {
		hub.mu.Unlock()
		return nil
	}
	var open func()
	if c == nil {
		// The call's context is no subscriber's: the call outlives the
		// subscriber that opened it, and ends when the last one leaves.
		ctx, cancel := context.WithCancel(context.Background())
		c = &sharedCall{
			hub:    hub,
			key:    key,
			cancel: cancel,
			done:   make(chan struct{}),
			drop: &sseItem{kind: itemDropped, st: status.Newf(codes.ResourceExhausted,
				"this client fell behind the shared stream of %s; reconnect to resume", m.name)},
			subs: make(map[*sharedSub]struct{}),
		}
		hub.calls[key] = c
		open = func() { go c.receive(ctx, h, m, req, md) }
	}
	if c.headers != nil {
		sub.items <- c.headers // the queue is new and empty
	}
	sub.call = c
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
		c.cancel()
		<-c.done
	}
}

// receive is the call's receiver goroutine, the only one that uses the
// upstream stream. It opens the call, relays its headers, messages and
// final status to the subscribers, and returns when the call ends: by
// itself, or because the last subscriber left and cancelled ctx.
func (c *sharedCall) receive(ctx context.Context, h *Handler, m *method, req proto.Message, md metadata.MD) {
	defer close(c.done)
	defer c.cancel()
	ctx = metadata.NewOutgoingContext(ctx, md)
	stream, st := openServerStream(ctx, m, req)
	if st != nil {
		c.end(&sseItem{kind: itemStatus, st: st})
		return
	}
	if hdr, _ := stream.Header(); hdr != nil {
		c.publish(&sseItem{kind: itemHeaders, data: h.headersJSON(hdr)}, "")
	}
	enc := newResponseEncoder(h, m)
	var (
		f    rawFrame
		seq  uint64
		json []byte // each message's JSON, copied into its frame
	)
	for {
		wire, st := recvWire(stream, &f)
		if st != nil {
			c.end(&sseItem{kind: itemStatus, st: st, trailers: stream.Trailer()})
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
		c.publish(&sseItem{kind: itemFrame, data: frame, size: len(data)}, id)
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
// place kept free, and nothing after it. id is a message's event id.
func (c *sharedCall) publish(it *sseItem, id string) {
	subs := c.subscribers(func() {
		if it.kind == itemHeaders {
			c.headers = it // for subscribers that join later
		} else {
			c.lastID = id
		}
	})
	for _, s := range subs {
		if s.dropped {
			continue
		}
		// Only this goroutine sends on s.items, so the length can only
		// shrink between this check and the send.
		if len(s.items) >= c.hub.queueLen {
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
