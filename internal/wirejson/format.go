package wirejson

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// The formatting rules below reproduce google.golang.org/protobuf's
// internal/encoding/json encoder and protojson's well-known type printers
// (v1.36.x) byte for byte.

// noEscape[c] is true for the ASCII bytes that protojson copies as is: it
// escapes only control characters, '"' and '\\' (not '<', '>', '&', DEL or
// U+2028).
var noEscape = func() (t [utf8.RuneSelf]bool) {
	for c := ' '; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. ok is false if s is not valid
// UTF-8, which protojson refuses.
func appendString(dst, s []byte) ([]byte, bool) {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if noEscape[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, n := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && n == 1 {
			return dst, false
		}
		i += n
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"'), true
}

// appendFloat is protojson's number format: NaN and infinities as strings,
// shortest representation, exponent form outside [1e-6, 1e21), and a
// one-digit negative exponent without its leading zero ("1e-07" -> "1e-7").
func appendFloat(dst []byte, f float64, bitSize int) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, `"NaN"`...)
	case math.IsInf(f, +1):
		return append(dst, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(dst, `"-Infinity"`...)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 {
		if bitSize == 64 && (abs < 1e-6 || abs >= 1e21) ||
			bitSize == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	dst = strconv.AppendFloat(dst, f, format, -1, bitSize)
	if format == 'e' {
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

const (
	minTimestampSeconds = -62135596800 // 0001-01-01T00:00:00Z
	maxTimestampSeconds = 253402300799 // 9999-12-31T23:59:59Z
	maxDurationSeconds  = 315576000000 // 10000 years
	maxNanos            = 999999999
)

// appendTimestamp prints a google.protobuf.Timestamp; ok is false where
// protojson reports an out-of-range value.
func appendTimestamp(dst []byte, secs int64, nanos int32) ([]byte, bool) {
	if secs < minTimestampSeconds || secs > maxTimestampSeconds || nanos < 0 || nanos > maxNanos {
		return dst, false
	}
	t := time.Unix(secs, 0).UTC()
	year, month, day := t.Date()
	hour, minute, sec := t.Clock()
	dst = append(dst, '"')
	dst = appendDigits(dst, uint64(year), 4)
	dst = append(dst, '-')
	dst = appendDigits(dst, uint64(month), 2)
	dst = append(dst, '-')
	dst = appendDigits(dst, uint64(day), 2)
	dst = append(dst, 'T')
	dst = appendDigits(dst, uint64(hour), 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, uint64(minute), 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, uint64(sec), 2)
	dst = appendNanos(dst, nanos)
	return append(dst, 'Z', '"'), true
}

// appendDuration prints a google.protobuf.Duration; ok is false where
// protojson reports an out-of-range value or mismatched signs.
func appendDuration(dst []byte, secs int64, nanos int32) ([]byte, bool) {
	if secs < -maxDurationSeconds || secs > maxDurationSeconds || nanos < -maxNanos || nanos > maxNanos ||
		(secs > 0 && nanos < 0) || (secs < 0 && nanos > 0) {
		return dst, false
	}
	dst = append(dst, '"')
	if secs < 0 || nanos < 0 {
		dst = append(dst, '-')
		secs, nanos = -secs, -nanos
	}
	dst = strconv.AppendInt(dst, secs, 10)
	dst = appendNanos(dst, nanos)
	return append(dst, 's', '"'), true
}

// appendNanos prints the fraction of a second with 0, 3, 6 or 9 digits,
// the fewest that are exact.
func appendNanos(dst []byte, nanos int32) []byte {
	switch n := uint64(nanos); {
	case n == 0:
		return dst
	case n%1e6 == 0:
		return appendDigits(append(dst, '.'), n/1e6, 3)
	case n%1e3 == 0:
		return appendDigits(append(dst, '.'), n/1e3, 6)
	default:
		return appendDigits(append(dst, '.'), n, 9)
	}
}

// appendDigits prints v zero-padded to width digits (v < 10^width).
func appendDigits(dst []byte, v uint64, width int) []byte {
	n := len(dst) + width
	dst = append(dst, "000000000"[:width]...)
	for i := n - 1; v > 0; i-- {
		dst[i] = byte('0' + v%10)
		v /= 10
	}
	return dst
}
