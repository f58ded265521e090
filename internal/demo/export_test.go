package demo

// NewChatServerWithQueue returns a ChatServer whose streams queue at most n
// messages, so that tests can make a client too slow quickly.
func NewChatServerWithQueue(n int) *ChatServer {
	return newChatServer(n)
}

// Members reports how many streams are in room.
func (s *ChatServer) Members(room string) int {
	return s.hub.members(room)
}

// WatchInterval exposes watchInterval.
var WatchInterval = watchInterval

// members reports how many subscribers room has.
func (h *hub) members(room string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.rooms[room])
}
