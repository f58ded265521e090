package demo_test

import (
	"context"
	"errors"
	"io"
	"math"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// watchAll runs a Watch call and returns its ticks, failing the test unless
// the call ends normally.
func watchAll(t *testing.T, c demov1.TickerServiceClient, req *demov1.WatchRequest) []*demov1.Tick {
	t.Helper()
	stream, err := c.Watch(t.Context(), req)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	var ticks []*demov1.Tick
	for {
		tick, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return ticks
		}
		if err != nil {
			t.Fatalf("Recv after %d ticks: %v", len(ticks), err)
		}
		ticks = append(ticks, tick)
	}
}

func TestWatchSequenceAndLimit(t *testing.T) {
	c := demov1.NewTickerServiceClient(dialDemo(t))
	ticks := watchAll(t, c, &demov1.WatchRequest{Symbol: "ACME", IntervalMs: 1, Limit: 5})
	if len(ticks) != 5 {
		t.Fatalf("got %d ticks, want 5 (the limit)", len(ticks))
	}
	for i, tick := range ticks {
		if want := uint64(i + 1); tick.GetSeq() != want {
			t.Errorf("tick %d: seq %d, want %d", i, tick.GetSeq(), want)
		}
		if tick.GetSymbol() != "ACME" {
			t.Errorf("tick %d: symbol %q, want ACME", i, tick.GetSymbol())
		}
		if want := demo.Price("ACME", tick.GetSeq()); tick.GetPrice() != want {
			t.Errorf("tick %d: price %v, want Price = %v", i, tick.GetPrice(), want)
		}
		if err := tick.GetTime().CheckValid(); err != nil || tick.GetTime().AsTime().IsZero() {
			t.Errorf("tick %d: time %v is not set (%v)", i, tick.GetTime(), err)
		}
	}
}

func TestWatchResume(t *testing.T) {
	c := demov1.NewTickerServiceClient(dialDemo(t))
	full := watchAll(t, c, &demov1.WatchRequest{Symbol: "XYZ", IntervalMs: 1, Limit: 6})
	resumed := watchAll(t, c, &demov1.WatchRequest{Symbol: "XYZ", IntervalMs: 1, AfterSeq: 3, Limit: 3})
	if len(resumed) != 3 {
		t.Fatalf("got %d ticks, want 3", len(resumed))
	}
	for i, tick := range resumed {
		want := full[3+i]
		if tick.GetSeq() != want.GetSeq() || tick.GetPrice() != want.GetPrice() {
			t.Errorf("resumed tick %d: (seq %d, price %v), want (seq %d, price %v)",
				i, tick.GetSeq(), tick.GetPrice(), want.GetSeq(), want.GetPrice())
		}
	}
}

func TestWatchLastSequence(t *testing.T) {
	// The stream ends after the largest seq instead of wrapping to 0.
	c := demov1.NewTickerServiceClient(dialDemo(t))
	ticks := watchAll(t, c, &demov1.WatchRequest{Symbol: "END", IntervalMs: 1, AfterSeq: math.MaxUint64 - 2})
	if len(ticks) != 2 || ticks[1].GetSeq() != math.MaxUint64 {
		t.Fatalf("got %d ticks, want 2 ending at MaxUint64", len(ticks))
	}
}

func TestWatchDefaultIntervalSendsFirstTickAtOnce(t *testing.T) {
	// With interval_ms 0 the pace is one second, but the first tick must
	// not wait for it; a limit of 1 then ends the call without any wait.
	c := demov1.NewTickerServiceClient(dialDemo(t))
	ticks := watchAll(t, c, &demov1.WatchRequest{Symbol: "ACME", Limit: 1})
	if len(ticks) != 1 || ticks[0].GetSeq() != 1 {
		t.Fatalf("got %v, want one tick with seq 1", ticks)
	}
}

func TestWatchInterval(t *testing.T) {
	for _, tc := range []struct {
		ms   int32
		want time.Duration
	}{
		{0, time.Second},
		{1, time.Millisecond},
		{250, 250 * time.Millisecond},
	} {
		got, err := demo.WatchInterval(tc.ms)
		if err != nil || got != tc.want {
			t.Errorf("WatchInterval(%d) = %v, %v; want %v", tc.ms, got, err, tc.want)
		}
	}
	_, err := demo.WatchInterval(-1)
	wantStatus(t, err, codes.InvalidArgument, "")
}

func TestWatchUntilClientLeaves(t *testing.T) {
	c := demov1.NewTickerServiceClient(dialDemo(t))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := c.Watch(ctx, &demov1.WatchRequest{Symbol: "ACME", IntervalMs: 1})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	for i := range 3 {
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("Recv %d: %v", i, err)
		}
	}
	cancel()
	for {
		if _, err = stream.Recv(); err != nil {
			break
		}
	}
	wantStatus(t, err, codes.Canceled, "")
}

func TestWatchValidation(t *testing.T) {
	c := demov1.NewTickerServiceClient(dialDemo(t))
	for _, tc := range []struct {
		name string
		req  *demov1.WatchRequest
		msg  string
	}{
		{"empty symbol", &demov1.WatchRequest{}, "symbol is required"},
		{"negative interval", &demov1.WatchRequest{Symbol: "A", IntervalMs: -1}, "interval_ms must not be negative"},
		{"negative limit", &demov1.WatchRequest{Symbol: "A", Limit: -1}, "limit must not be negative"},
		{"no tick after max seq", &demov1.WatchRequest{Symbol: "A", AfterSeq: math.MaxUint64}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream, err := c.Watch(t.Context(), tc.req)
			if err == nil {
				_, err = stream.Recv()
			}
			wantStatus(t, err, codes.InvalidArgument, tc.msg)
		})
	}
}

func TestPrice(t *testing.T) {
	symbols := []string{"A", "ACME", "XYZ", "GOOG", "a much longer symbol name"}
	seqs := []uint64{0, 1, 2, 3, 100, 1 << 32, math.MaxUint64}
	for _, sym := range symbols {
		distinct := map[float64]bool{}
		for _, seq := range seqs {
			p := demo.Price(sym, seq)
			if again := demo.Price(sym, seq); again != p {
				t.Errorf("Price(%q, %d) = %v then %v; want a pure function", sym, seq, p, again)
			}
			if p < 9 || p > 560 || math.IsNaN(p) {
				t.Errorf("Price(%q, %d) = %v, want within the base range ±9 %%", sym, seq, p)
			}
			if cents := p * 100; math.Abs(cents-math.Round(cents)) > 1e-6 {
				t.Errorf("Price(%q, %d) = %v, want 2 decimals", sym, seq, p)
			}
			distinct[p] = true
		}
		if len(distinct) < len(seqs)/2 {
			t.Errorf("Price(%q, ·) took only %d values over %d seqs; want it to move", sym, len(distinct), len(seqs))
		}
	}
	if demo.Price("ACME", 1) == demo.Price("XYZ", 1) {
		t.Errorf("ACME and XYZ have the same price; want symbol-dependent prices")
	}
}

func TestQuoteIsTheTickerTickOfNow(t *testing.T) {
	c := demov1.NewTickerServiceClient(dialDemo(t))
	before := time.Now().Unix()
	quote, err := c.Quote(t.Context(), &demov1.QuoteRequest{Symbol: "ACME"})
	after := time.Now().Unix()
	if err != nil {
		t.Fatalf("Quote: %v", err)
	}
	if quote.GetSymbol() != "ACME" {
		t.Errorf("symbol %q, want ACME", quote.GetSymbol())
	}
	seq := quote.GetSeq()
	if seq < uint64(before) || seq > uint64(after) {
		t.Errorf("seq %d, want the Unix seconds of the call, in [%d, %d]", seq, before, after)
	}
	if err := quote.GetTime().CheckValid(); err != nil || quote.GetTime().GetSeconds() != int64(seq) {
		t.Errorf("time %v (%v), want a valid time in second %d, the seq", quote.GetTime(), err, seq)
	}
	// The ticker, asked for the same seq, reports the same price.
	ticks := watchAll(t, c, &demov1.WatchRequest{Symbol: "ACME", IntervalMs: 1, AfterSeq: seq - 1, Limit: 1})
	if len(ticks) != 1 || ticks[0].GetSeq() != seq {
		t.Fatalf("Watch after %d returned %v, want one tick with seq %d", seq-1, ticks, seq)
	}
	if quote.GetPrice() != ticks[0].GetPrice() || quote.GetPrice() != demo.Price("ACME", seq) {
		t.Errorf("Quote price %v, Watch price %v, Price %v; want all equal",
			quote.GetPrice(), ticks[0].GetPrice(), demo.Price("ACME", seq))
	}
}

func TestQuoteValidation(t *testing.T) {
	c := demov1.NewTickerServiceClient(dialDemo(t))
	_, err := c.Quote(t.Context(), &demov1.QuoteRequest{})
	wantStatus(t, err, codes.InvalidArgument, "symbol is required")
}
