package demo

import (
	"testing"

	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
)

func TestHubDropsFullSubscriber(t *testing.T) {
	h := newHub()
	slow, fast := newSubscriber(1), newSubscriber(4)
	h.join(slow, "r")
	h.join(fast, "r")

	h.publish(&demov1.ChatMessage{Room: "r", Text: "1"})
	h.publish(&demov1.ChatMessage{Room: "r", Text: "2"})

	select {
	case <-slow.dropped:
	default:
		t.Fatal("slow subscriber with a full queue was not dropped")
	}
	select {
	case <-fast.dropped:
		t.Fatal("fast subscriber was dropped")
	default:
	}
	if got := len(fast.out); got != 2 {
		t.Errorf("fast subscriber has %d queued messages, want 2", got)
	}
	if got := h.members("r"); got != 1 {
		t.Errorf("room has %d members, want 1", got)
	}

	// A dropped subscriber stays out, and leaving afterwards is harmless
	// (it must not close dropped a second time).
	h.join(slow, "r")
	h.leave(slow)
	if got := h.members("r"); got != 1 {
		t.Errorf("room has %d members after the dropped one rejoined, want 1", got)
	}
}

func TestHubLeaveRemovesFromAllRooms(t *testing.T) {
	h := newHub()
	sub := newSubscriber(4)
	h.join(sub, "a")
	h.join(sub, "b")
	h.join(sub, "a") // joining twice is harmless
	h.leave(sub)
	if len(h.rooms) != 0 {
		t.Errorf("rooms left after the only member left: %v", h.rooms)
	}
	h.join(sub, "a")
	if len(h.rooms) != 0 {
		t.Errorf("a subscriber that left was put back in a room: %v", h.rooms)
	}
	h.publish(&demov1.ChatMessage{Room: "a", Text: "nobody"})
	if len(sub.out) != 0 {
		t.Errorf("a subscriber that left received a message")
	}
}
