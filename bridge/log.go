package bridge

// Attribute keys of the handler's structured logs.
const (
	logKeyMethod    = "method"
	logKeyTransport = "transport"
	logKeyPeer      = "peer"
	logKeyCode      = "code"
	logKeyMessage   = "message"
	logKeyDuration  = "duration"
	logKeyMessages  = "messages"
)
