package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median(nil) is not NaN")
	}
	in := []float64{3, 1, 2}
	median(in)
	if in[0] != 3 {
		t.Error("median sorted its input")
	}
}

func TestPercentile(t *testing.T) {
	var xs []int
	for i := 1; i <= 100; i++ {
		xs = append(xs, i)
	}
	for _, tc := range []struct {
		p    float64
		want int
	}{{50, 50}, {99, 99}, {100, 100}, {1, 1}, {0.1, 1}, {99.5, 100}} {
		if got := percentile(xs, tc.p); got != tc.want {
			t.Errorf("percentile(1..100, %v) = %d, want %d", tc.p, got, tc.want)
		}
	}
	if got := percentile([]int{7}, 99); got != 7 {
		t.Errorf("percentile([7], 99) = %d", got)
	}
	if got := percentile([]int(nil), 50); got != 0 {
		t.Errorf("percentile(nil) = %d", got)
	}
	s := summarize([]time.Duration{3, 1, 2})
	if s.N != 3 || s.P50 != 2 || s.P99 != 3 || s.Max != 3 {
		t.Errorf("summarize = %+v", s)
	}
}

func TestSSECounter(t *testing.T) {
	stream := "retry: 2000\n\n" +
		"event: headers\ndata: {}\n\n" +
		"id: 1\nevent: message\ndata: {\"seq\":\"1\"}\n\n" +
		": ping\n\n" +
		"id: 2\nevent: message\ndata: {\"a\":\ndata: 1}\n\n" +
		"data: no event field is a message too\n\n" +
		"event: messages\ndata: other type\n\n" +
		"event: message\n\n" + // no data: dispatches nothing
		"id: 3\nevent: message\ndata: {\"seq\":\"3\"}\n\n" +
		"event: end\ndata: {\"code\":0}\n\n"
	const want = 4
	// Every way of cutting the stream into two chunks, and byte by byte.
	for cut := range len(stream) + 1 {
		var c sseCounter
		c.Write([]byte(stream[:cut]))
		c.Write([]byte(stream[cut:]))
		if c.messages != want {
			t.Fatalf("cut at %d: %d messages, want %d", cut, c.messages, want)
		}
	}
	var c sseCounter
	for i := range len(stream) {
		c.Write([]byte{stream[i]})
	}
	if c.messages != want {
		t.Fatalf("byte by byte: %d messages, want %d", c.messages, want)
	}
	// A long data line does not confuse the prefix tracking.
	c = sseCounter{}
	c.Write([]byte("event: message\ndata: " + strings.Repeat("x", 100) + "\n\n"))
	if c.messages != 1 {
		t.Fatalf("long line: %d messages", c.messages)
	}
}

func TestTickTime(t *testing.T) {
	data := []byte(`{"symbol":"FAN","seq":"7","price":101.5,"time":"2026-11-24T10:12:39.261858514Z"}`)
	got, ok := tickTime(data)
	want := time.Date(2026, 11, 24, 10, 12, 39, 261858514, time.UTC)
	if !ok || !got.Equal(want) {
		t.Fatalf("tickTime = %v, %v; want %v", got, ok, want)
	}
	if _, ok := tickTime([]byte(`{"seq":"1"}`)); ok {
		t.Fatal("tickTime found a time in a message without one")
	}
}
