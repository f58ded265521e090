package bridge

import (
	"strings"
	"testing"
)

func TestCloseReason(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 122) + "é" // é is 2 bytes: 124 in all
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"short", "boom", "boom"},
		{"exactly 123 bytes", strings.Repeat("a", 123), strings.Repeat("a", 123)},
		{"cut", strings.Repeat("a", 200), strings.Repeat("a", 123)},
		{"cut before a split rune", long, strings.Repeat("x", 122)},
		{"invalid UTF-8 replaced", "a\xffb", "a\uFFFDb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := closeReason(tt.in)
			if got != tt.want {
				t.Errorf("closeReason(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if len(got) > maxCloseReasonBytes {
				t.Errorf("closeReason(%q) is %d bytes long", tt.in, len(got))
			}
		})
	}
}

func TestOriginAllowed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		allowed []string
		origin  string
		host    string
		want    bool
	}{
		{"same origin", nil, "http://bridge.example:8080", "bridge.example:8080", true},
		{"same origin, other case", nil, "https://Bridge.Example", "bridge.example", true},
		{"other host", nil, "https://evil.example", "bridge.example", false},
		{"other port", nil, "http://bridge.example:9090", "bridge.example:8080", false},
		{"null origin", nil, "null", "bridge.example", false},
		{"garbage", nil, "%%%", "bridge.example", false},
		{"listed", []string{"https://app.example"}, "https://app.example", "bridge.example", true},
		{"listed with slash", []string{"https://app.example/"}, "https://app.example", "bridge.example", true},
		{"listed, other scheme", []string{"https://app.example"}, "http://app.example", "bridge.example", false},
		{"not listed", []string{"https://app.example"}, "https://evil.example", "bridge.example", false},
		{"list keeps same-origin", []string{"https://app.example"}, "http://bridge.example", "bridge.example", true},
		{"any", []string{"*"}, "https://evil.example", "bridge.example", true},
		{"any, null origin", []string{"*"}, "null", "bridge.example", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := &Handler{cfg: &config{allowedOrigins: tt.allowed}}
			if got := h.originAllowed(tt.origin, tt.host); got != tt.want {
				t.Errorf("originAllowed(%q, %q) with %q = %v, want %v", tt.origin, tt.host, tt.allowed, got, tt.want)
			}
		})
	}
}
