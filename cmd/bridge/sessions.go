package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"

	"github.com/grpcbridge/grpcbridge/bridge"
)

// sessionKeyBytes is the size of the key that -demo makes up when no
// -session-key-file is given.
const sessionKeyBytes = 32

// sessionOptions turns the session flags into [bridge.SessionOptions], or
// nil when sessions are off: without -session-key-file, and outside -demo,
// which makes up a key of its own (a single replica needs no shared one).
func sessionOptions(cfg *Config) (*bridge.SessionOptions, error) {
	o := &bridge.SessionOptions{
		AdvertiseAddr:        cfg.AdvertiseAddr,
		Peers:                cfg.SessionPeers,
		GracePeriod:          cfg.SessionGrace,
		MaxCalls:             cfg.SessionMaxCalls,
		MaxSessionsPerClient: cfg.SessionsPerClient,
	}
	switch {
	case cfg.SessionKeyFile != "":
		keys, err := readSessionKeys(cfg.SessionKeyFile)
		if err != nil {
			return nil, err
		}
		o.Keys = keys
	case cfg.Demo:
		key := make([]byte, sessionKeyBytes)
		_, _ = rand.Read(key) // crypto/rand.Read never fails
		o.Keys = [][]byte{key}
	default:
		return nil, nil //nolint:nilnil // sessions off
	}
	return o, nil
}

// readSessionKeys reads the session token keys: one per non-empty line,
// the line's bytes as they are (so `openssl rand -base64 48` makes one).
// The first signs; all are accepted, which is how a key rotates.
func readSessionKeys(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-session-key-file: %w", err)
	}
	var keys [][]byte
	for line := range bytes.Lines(data) {
		if line = bytes.TrimSpace(line); len(line) > 0 {
			keys = append(keys, line)
		}
	}
	switch {
	case len(keys) == 0:
		return nil, fmt.Errorf("-session-key-file %s: no key in it", path)
	case len(keys) > 2:
		return nil, fmt.Errorf("-session-key-file %s: %d keys; want one, or two while rotating", path, len(keys))
	}
	return keys, nil
}
