package bridge

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"time"
	"unicode/utf8"
)

// Session tokens (docs/protocol.md, "Replicas"):
//
//	base64url(payload) "." base64url(HMAC-SHA256(key, payload))
//	payload = 0x01 | session id (16 bytes) | expiry (8 bytes, Unix seconds, big-endian) | owner "ip:port"
//
// The replicas share the keys, so any of them can check a token and learn
// the session's owner from it; a client can neither make one nor change
// the owner it names.

const (
	tokenVersion    = 1
	sessionIDBytes  = 16
	tokenHeadBytes  = 1 + sessionIDBytes + 8
	minSessionKey   = 32 // bytes: HMAC-SHA256's own size
	maxTokenBytes   = 512
	maxOwnerAddrLen = 255
)

// Why a token is refused. errTokenMalformed is the client's mistake (400);
// the others mean the token is not (or no longer) the bridge's (403).
var (
	errTokenMalformed = errors.New("bridge: session token malformed")
	errTokenInvalid   = errors.New("bridge: session token not valid")
	errTokenExpired   = errors.New("bridge: session token expired")
)

// sessionID names a session.
type sessionID [sessionIDBytes]byte

func newSessionID() sessionID {
	var id sessionID
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
	return id
}

// sessionToken is what a token says.
type sessionToken struct {
	id     sessionID
	expiry time.Time // to the second
	owner  string    // the owner's advertised address, "" when the bridge runs alone
}

// tokenKeys are the HMAC keys: the first signs, every one verifies.
type tokenKeys [][]byte

func (k tokenKeys) sign(t sessionToken) string {
	payload := make([]byte, 0, tokenHeadBytes+len(t.owner))
	payload = append(payload, tokenVersion)
	payload = append(payload, t.id[:]...)
	payload = binary.BigEndian.AppendUint64(payload, uint64(t.expiry.Unix()))
	payload = append(payload, t.owner...)
	return base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(mac(k[0], payload))
}

func mac(key, payload []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(payload)
	return m.Sum(nil)
}

// forwardMark is what a replica that forwards a request of session sid
// to its owner puts in the request's Grpc-Session-Forwarded header: an HMAC
// of the token with the signing key. Only replicas hold the keys, so a
// browser cannot make a request look forwarded (and skip the owner's origin
// check) even through a proxy whose address is in the peer set; and the
// mark never leaves the replicas, so it cannot be learnt from an answer.
func (k tokenKeys) forwardMark(sid string) string {
	return base64.RawURLEncoding.EncodeToString(mac(k[0], append([]byte(forwardMarkContext), sid...)))
}

// forwardMarkValid reports whether mark is the forward mark of sid under
// any of the keys.
func (k tokenKeys) forwardMarkValid(mark, sid string) bool {
	sum, err := base64.RawURLEncoding.DecodeString(mark)
	if err != nil || len(sum) != sha256.Size {
		return false
	}
	valid := false
	for _, key := range k {
		if hmac.Equal(sum, mac(key, append([]byte(forwardMarkContext), sid...))) {
			valid = true
		}
	}
	return valid
}

// forwardMarkContext keeps a forward mark from ever equalling a token's
// MAC.
const forwardMarkContext = "grpc-session-forwarded\x00"

// verify checks s with every key and its expiry against now.
func (k tokenKeys) verify(s string, now time.Time) (sessionToken, error) {
	if len(s) > maxTokenBytes {
		return sessionToken{}, errTokenMalformed
	}
	p64, m64, ok := strings.Cut(s, ".")
	if !ok {
		return sessionToken{}, errTokenMalformed
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p64)
	sum, err2 := base64.RawURLEncoding.DecodeString(m64)
	if err1 != nil || err2 != nil || len(payload) < tokenHeadBytes || payload[0] != tokenVersion || len(sum) != sha256.Size {
		return sessionToken{}, errTokenMalformed
	}
	valid := false
	for _, key := range k {
		// Every key is tried, so that the time taken does not tell which.
		if hmac.Equal(sum, mac(key, payload)) {
			valid = true
		}
	}
	if !valid {
		return sessionToken{}, errTokenInvalid
	}
	var t sessionToken
	copy(t.id[:], payload[1:])
	t.expiry = time.Unix(int64(binary.BigEndian.Uint64(payload[1+sessionIDBytes:])), 0) //nolint:gosec // signed by us
	t.owner = string(payload[tokenHeadBytes:])
	if !utf8.ValidString(t.owner) || len(t.owner) > maxOwnerAddrLen {
		return sessionToken{}, errTokenInvalid
	}
	if !now.Before(t.expiry) {
		return sessionToken{}, errTokenExpired
	}
	return t, nil
}
