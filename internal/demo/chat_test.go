package demo_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

type chatStream = grpc.BidiStreamingClient[demov1.ChatMessage, demov1.ChatMessage]

// openChat opens a Chat stream that ends with the test.
func openChat(t *testing.T, c demov1.ChatServiceClient) chatStream {
	t.Helper()
	stream, err := c.Chat(t.Context())
	if err != nil {
		t.Fatalf("Chat: %v", err)
	}
	return stream
}

func say(t *testing.T, s chatStream, room, user, text string) {
	t.Helper()
	if err := s.Send(&demov1.ChatMessage{Room: room, User: user, Text: text}); err != nil {
		t.Fatalf("Send(%s, %s, %q): %v", room, user, text, err)
	}
}

// expect receives the next message on s and fails the test unless it is
// text from user in room, with a server time.
func expect(t *testing.T, s chatStream, room, user, text string) {
	t.Helper()
	msg, err := s.Recv()
	if err != nil {
		t.Fatalf("Recv, want %q: %v", text, err)
	}
	if msg.GetRoom() != room || msg.GetUser() != user || msg.GetText() != text {
		t.Fatalf("got (%s, %s, %q), want (%s, %s, %q)",
			msg.GetRoom(), msg.GetUser(), msg.GetText(), room, user, text)
	}
	if msg.GetTime().CheckValid() != nil || msg.GetTime().AsTime().IsZero() {
		t.Fatalf("message %q has no server time", text)
	}
}

// Joins are asynchronous, so the tests below first have each stream send a
// message to its room and wait for it to come back: because a stream's
// messages are handled in order, the echo proves the join happened. The
// stream-specific order of deliveries then makes "nothing else arrived
// before" checks exact, without any timeout.

func TestChatRoomDeliversToAllIncludingSender(t *testing.T) {
	c := demov1.NewChatServiceClient(dialDemo(t))
	alice, bob := openChat(t, c), openChat(t, c)

	// A join-only message delivers nothing: the first message each stream
	// receives is its own text message sent after the join.
	say(t, alice, "lobby", "alice", "")
	say(t, alice, "lobby", "alice", "alice here")
	expect(t, alice, "lobby", "alice", "alice here")

	say(t, bob, "lobby", "bob", "")
	say(t, bob, "lobby", "bob", "bob here")
	expect(t, bob, "lobby", "bob", "bob here")
	expect(t, alice, "lobby", "bob", "bob here")

	say(t, alice, "lobby", "alice", "hello")
	expect(t, alice, "lobby", "alice", "hello")
	expect(t, bob, "lobby", "alice", "hello")
}

func TestChatRoomsAreIsolated(t *testing.T) {
	c := demov1.NewChatServiceClient(dialDemo(t))
	alice, bob, carol := openChat(t, c), openChat(t, c), openChat(t, c)

	// alice is in both rooms, bob only in "red", carol only in "blue".
	say(t, alice, "red", "alice", "")
	say(t, alice, "blue", "alice", "")
	say(t, alice, "red", "alice", "alice ready")
	expect(t, alice, "red", "alice", "alice ready")
	say(t, bob, "red", "bob", "bob in red")
	expect(t, bob, "red", "bob", "bob in red")
	expect(t, alice, "red", "bob", "bob in red")
	say(t, carol, "blue", "carol", "carol in blue")
	expect(t, carol, "blue", "carol", "carol in blue")
	expect(t, alice, "blue", "carol", "carol in blue")

	say(t, bob, "red", "bob", "red only")
	expect(t, bob, "red", "bob", "red only")
	expect(t, alice, "red", "bob", "red only")

	say(t, carol, "blue", "carol", "blue only")
	expect(t, alice, "blue", "carol", "blue only")
	// carol's next message is her own: "red only" was fully published
	// (alice got it) before "blue only", so it never reached carol.
	expect(t, carol, "blue", "carol", "blue only")

	say(t, bob, "red", "bob", "red again")
	expect(t, alice, "red", "bob", "red again")
	// Likewise bob never got "blue only".
	expect(t, bob, "red", "bob", "red again")
}

func TestChatLeaving(t *testing.T) {
	srv := demo.NewChatServer()
	gs := grpc.NewServer(grpc.WaitForHandlers(true))
	demov1.RegisterChatServiceServer(gs, srv)
	c := demov1.NewChatServiceClient(dial(t, serve(t, gs)))

	alice := openChat(t, c)
	say(t, alice, "room", "alice", "hi")
	expect(t, alice, "room", "alice", "hi")
	if got := srv.Members("room"); got != 1 {
		t.Fatalf("room has %d members, want 1", got)
	}

	// Half-closing keeps the stream in its rooms ...
	bob := openChat(t, c)
	say(t, bob, "room", "bob", "bye")
	if err := bob.CloseSend(); err != nil {
		t.Fatalf("CloseSend: %v", err)
	}
	expect(t, bob, "room", "bob", "bye")
	expect(t, alice, "room", "bob", "bye")
	say(t, alice, "room", "alice", "still there?")
	expect(t, bob, "room", "alice", "still there?")
	expect(t, alice, "room", "alice", "still there?")
	if got := srv.Members("room"); got != 2 {
		t.Fatalf("room has %d members, want 2", got)
	}

	// ... and the streams ending removes them. With WaitForHandlers, Stop
	// returns once every handler has, and so has left its rooms.
	gs.Stop()
	if got := srv.Members("room"); got != 0 {
		t.Fatalf("room has %d members after the streams ended, want 0", got)
	}
}

func TestChatEmptyRoom(t *testing.T) {
	c := demov1.NewChatServiceClient(dialDemo(t))
	s := openChat(t, c)
	say(t, s, "", "alice", "hello")
	_, err := s.Recv()
	wantStatus(t, err, codes.InvalidArgument, "room is required")
}

func TestChatDropsSlowClient(t *testing.T) {
	const queue = 2
	srv := demo.NewChatServerWithQueue(queue)
	gs := grpc.NewServer(grpc.WaitForHandlers(true))
	demov1.RegisterChatServiceServer(gs, srv)
	lis := serve(t, gs)

	// A fixed 64 KiB window (which also turns off BDP window growth) keeps
	// what the transport buffers for the slow client small, so its queue
	// fills after a few messages.
	slowConn := dial(t, lis, grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	slow := openChat(t, demov1.NewChatServiceClient(slowConn))
	fast := openChat(t, demov1.NewChatServiceClient(dial(t, lis)))

	say(t, slow, "room", "slow", "ready")
	expect(t, slow, "room", "slow", "ready")
	say(t, fast, "room", "fast", "ready")
	expect(t, fast, "room", "fast", "ready")
	expect(t, slow, "room", "fast", "ready")
	if got := srv.Members("room"); got != 2 {
		t.Fatalf("room has %d members, want 2", got)
	}

	// fast publishes 16 KiB messages and reads each back before sending the
	// next, so its own queue never holds more than one; slow reads nothing.
	text := strings.Repeat("x", 16<<10)
	sent := 0
	for srv.Members("room") != 1 {
		if sent == 10000 {
			t.Fatalf("slow client still in the room after %d messages", sent)
		}
		say(t, fast, "room", "fast", text)
		expect(t, fast, "room", "fast", text)
		sent++
	}

	// slow may still get messages already buffered, then its stream ends.
	var err error
	for err == nil {
		_, err = slow.Recv()
	}
	wantStatus(t, err, codes.ResourceExhausted, "chat: client too slow")

	// The room carries on for the others.
	say(t, fast, "room", "fast", "after")
	expect(t, fast, "room", "fast", "after")
}

// post calls Post and fails the test unless it returns the message with a
// server time.
func post(t *testing.T, c demov1.ChatServiceClient, room, user, text string) *demov1.ChatMessage {
	t.Helper()
	msg, err := c.Post(t.Context(), &demov1.ChatMessage{Room: room, User: user, Text: text})
	if err != nil {
		t.Fatalf("Post(%s, %s, %q): %v", room, user, text, err)
	}
	if msg.GetRoom() != room || msg.GetUser() != user || msg.GetText() != text {
		t.Fatalf("Post returned (%s, %s, %q), want (%s, %s, %q)",
			msg.GetRoom(), msg.GetUser(), msg.GetText(), room, user, text)
	}
	if msg.GetTime().CheckValid() != nil || msg.GetTime().AsTime().IsZero() {
		t.Fatalf("Post returned %q without a server time", text)
	}
	return msg
}

func TestChatPostDeliversToTheRoomOnly(t *testing.T) {
	c := demov1.NewChatServiceClient(dialDemo(t))
	alice, bob := openChat(t, c), openChat(t, c)
	say(t, alice, "red", "alice", "alice in red")
	expect(t, alice, "red", "alice", "alice in red")
	say(t, bob, "blue", "bob", "bob in blue")
	expect(t, bob, "blue", "bob", "bob in blue")

	// Post publishes before it returns, so once it has returned the message
	// is queued for alice, and nothing posted later can overtake it.
	sent := post(t, c, "red", "carol", "hello red")
	got, err := alice.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	if !proto.Equal(got, sent) {
		t.Errorf("alice received %v, want what Post returned: %v", got, sent)
	}

	// bob's next message is the one posted to his room: "hello red" was
	// fully published before it and never reached him.
	post(t, c, "blue", "carol", "hello blue")
	expect(t, bob, "blue", "carol", "hello blue")

	// A client's time is replaced by the server's.
	old := timestamppb.New(time.Unix(1, 0))
	msg, err := c.Post(t.Context(), &demov1.ChatMessage{Room: "red", Text: "backdated", Time: old})
	if err != nil {
		t.Fatalf("Post: %v", err)
	}
	if msg.GetTime().AsTime().Equal(old.AsTime()) {
		t.Errorf("Post kept the client's time %v", old.AsTime())
	}
	expect(t, alice, "red", "", "backdated")
}

func TestChatPostValidation(t *testing.T) {
	c := demov1.NewChatServiceClient(dialDemo(t))
	alice := openChat(t, c)
	say(t, alice, "room", "alice", "ready")
	expect(t, alice, "room", "alice", "ready")

	for _, tc := range []struct {
		name string
		msg  *demov1.ChatMessage
		want string
	}{
		{"empty text", &demov1.ChatMessage{Room: "room", User: "bob"}, "text is required"},
		{"empty room", &demov1.ChatMessage{User: "bob", Text: "hi"}, "room is required"},
		{"empty message", &demov1.ChatMessage{}, "room is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Post(t.Context(), tc.msg)
			wantStatus(t, err, codes.InvalidArgument, tc.want)
		})
	}
	// The refused posts delivered nothing: alice's next message is this one.
	post(t, c, "room", "bob", "valid")
	expect(t, alice, "room", "bob", "valid")
}
