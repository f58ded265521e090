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
