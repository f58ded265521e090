package demo

import (
	"context"
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
)

// defaultChatQueue is how many delivered messages may wait for one stream
// before the hub gives up on it.
const defaultChatQueue = 64

var (
	// errTooSlow ends the stream of a subscriber the hub dropped.
	errTooSlow = status.Error(codes.ResourceExhausted, "chat: client too slow")
	// errNoRoom refuses a Chat or Post message without a room.
	errNoRoom = status.Error(codes.InvalidArgument, "room is required")
	// errNoText refuses a Post without text: there is nothing to join.
	errNoText = status.Error(codes.InvalidArgument, "text is required")
)

// ChatServer implements demov1.ChatServiceServer. All its streams share one
// hub, so messages, whether sent on a Chat stream or with Post, reach every
// stream of the same ChatServer in the room.
// Create it with NewChatServer.
type ChatServer struct {
	demov1.UnimplementedChatServiceServer

	hub      *hub
	queueLen int
}

// NewChatServer returns a ChatServer with an empty set of rooms.
func NewChatServer() *ChatServer {
	return newChatServer(defaultChatQueue)
}

// newChatServer returns a ChatServer whose streams queue at most queueLen
// undelivered messages each.
func newChatServer(queueLen int) *ChatServer {
	return &ChatServer{hub: newHub(), queueLen: queueLen}
}

// Chat serves one client. Every message the client sends joins the stream to
// the message's room (a stream may be in several rooms); a message with text
// is then delivered, stamped with the server's time, to every stream in that
// room, the sender included.
//
// Two goroutines serve the stream, the most gRPC allows on one stream (one
// sender and one receiver): a receive goroutine reads the client's messages
// and publishes them through the hub, while this handler goroutine drains
// the stream's queue into Send. Publishing never blocks: a stream whose queue
// is full is dropped and ends with RESOURCE_EXHAUSTED, so one slow client
// cannot hold up a room.
//
// The client half-closing does not end the call: the stream stays in its
// rooms and keeps receiving until the client leaves, the server stops, or
// the hub drops it. When the call ends, for whatever reason, the stream
// leaves all its rooms.
func (s *ChatServer) Chat(stream grpc.BidiStreamingServer[demov1.ChatMessage, demov1.ChatMessage]) error {
	ctx := stream.Context()
	sub := newSubscriber(s.queueLen)
	defer s.hub.leave(sub)

	// recvErr is buffered so that the receive goroutine can always report
	// and exit, even when this handler has already returned. That goroutine
	// cannot be joined here: it may be blocked in Recv, which only returns
	// once the call is over. gRPC cancels the stream as soon as this handler
	// returns, which unblocks Recv, so the goroutine ends with the RPC.
	recvErr := make(chan error, 1)
	go func(errc chan<- error) { errc <- s.receive(stream, sub) }(recvErr)

	for {
		// Check for a drop first: a dropped subscriber may still have
		// queued messages, and there is no point sending them.
		select {
		case <-sub.dropped:
			return errTooSlow
		default:
		}
		select {
		case msg := <-sub.out:
			if err := stream.Send(msg); err != nil {
				return err
			}
		case err := <-recvErr:
			if err != nil {
				return err
			}
			// The client half-closed: keep delivering, but stop
			// selecting on the spent channel.
			recvErr = nil
		case <-sub.dropped:
			return errTooSlow
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// receive reads the client's messages until the client half-closes (nil) or
// the stream fails, joining and publishing each one.
func (s *ChatServer) receive(stream grpc.BidiStreamingServer[demov1.ChatMessage, demov1.ChatMessage], sub *subscriber) error {
	for {
		in, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if in.GetRoom() == "" {
			return errNoRoom
		}
		s.hub.join(sub, in.GetRoom())
		if in.GetText() == "" {
			continue // a join-only message delivers nothing
		}
		s.deliver(in)
	}
}

// Post delivers in to every Chat stream in its room, as if one of them had
// sent it, and returns the delivered message with the server's time. It
// joins nothing, so the poster receives the message only through a Chat
// stream of its own. The message is queued for every stream in the room
// before Post returns.
func (s *ChatServer) Post(_ context.Context, in *demov1.ChatMessage) (*demov1.ChatMessage, error) {
	switch {
	case in.GetRoom() == "":
		return nil, errNoRoom
	case in.GetText() == "":
		return nil, errNoText
	}
	return s.deliver(in), nil
}

// deliver stamps a copy of in (room, user and text; a client's time is
// ignored) with the server's time, publishes it to in's room and returns it.
// The returned message is shared with the room's streams, so nobody may
// modify it; gRPC only marshals it.
func (s *ChatServer) deliver(in *demov1.ChatMessage) *demov1.ChatMessage {
	msg := &demov1.ChatMessage{
		Room: in.GetRoom(),
		User: in.GetUser(),
		Text: in.GetText(),
		Time: timestamppb.Now(),
	}
	s.hub.publish(msg)
	return msg
}

// subscriber is one Chat stream as the hub sees it.
type subscriber struct {
	// out holds delivered messages until the stream's handler sends them.
	out chan *demov1.ChatMessage
	// dropped is closed when the hub drops the subscriber for a full queue.
	dropped chan struct{}

	// The fields below are guarded by hub.mu.

	// rooms is the set of rooms the subscriber is in.
	rooms map[string]struct{}
	// gone is set once the subscriber left or was dropped; it keeps a late
	// join from putting it back into a room.
	gone bool
}

func newSubscriber(queueLen int) *subscriber {
	return &subscriber{
		out:     make(chan *demov1.ChatMessage, queueLen),
		dropped: make(chan struct{}),
		rooms:   make(map[string]struct{}),
	}
}

// hub routes messages to the subscribers of each room. One mutex guards all
// of it: every operation is short and never blocks (sends to the queues are
// non-blocking), so finer locking would buy nothing.
type hub struct {
	mu    sync.Mutex
	rooms map[string]map[*subscriber]struct{}
}

func newHub() *hub {
	return &hub{rooms: make(map[string]map[*subscriber]struct{})}
}

// join adds sub to room. Joining a room twice is harmless, and joining after
// sub left is ignored: the receive goroutine may still be handling a message
// when the handler has already returned and left.
func (h *hub) join(sub *subscriber, room string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sub.gone {
		return
	}
	members := h.rooms[room]
	if members == nil {
		members = make(map[*subscriber]struct{})
		h.rooms[room] = members
	}
	members[sub] = struct{}{}
	sub.rooms[room] = struct{}{}
}

// publish queues msg for every subscriber of msg.Room, dropping those whose
// queue is full. All subscribers share msg: it is never modified after this
// point, and concurrent marshalling of an unmodified message is safe.
func (h *hub) publish(msg *demov1.ChatMessage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	// removeLocked may delete from the map being ranged over; Go allows it.
	for sub := range h.rooms[msg.GetRoom()] {
		select {
		case sub.out <- msg:
		default:
			h.removeLocked(sub)
			close(sub.dropped)
		}
	}
}

// leave removes sub from all its rooms. It is safe to call after the hub
// dropped sub.
func (h *hub) leave(sub *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(sub)
}

// removeLocked removes sub from all its rooms and deletes the rooms it
// leaves empty, so the room map does not grow with every name ever used.
// h.mu must be held.
func (h *hub) removeLocked(sub *subscriber) {
	sub.gone = true
	for room := range sub.rooms {
		members := h.rooms[room]
		delete(members, sub)
		if len(members) == 0 {
			delete(h.rooms, room)
		}
	}
	clear(sub.rooms)
}
