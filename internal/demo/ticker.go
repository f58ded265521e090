package demo

import (
	"context"
	"hash/fnv"
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
)

// defaultTickInterval is the pace of a Watch call whose interval_ms is 0.
const defaultTickInterval = time.Second

// errNoSymbol is the answer of Watch and Quote to a request without a symbol.
var errNoSymbol = status.Error(codes.InvalidArgument, "symbol is required")

// TickerServer implements demov1.TickerServiceServer. It keeps no state: every
// tick is computed from its (symbol, seq) pair, which is what lets a client
// resume a stream from any sequence number. The zero value is ready to use.
type TickerServer struct {
	demov1.UnimplementedTickerServiceServer
}

// Watch streams ticks for req.Symbol, starting with seq = req.AfterSeq + 1.
// The first tick is sent at once and the following ones every interval_ms
// (1000 when 0). When req.Limit > 0 the call ends normally after that many
// ticks; otherwise it runs until the client leaves.
//
// Resumption after a reconnect needs nothing here: over SSE the bridge turns
// the Last-Event-ID header into after_seq before calling Watch, so a
// "last-event-id" entry in the incoming metadata is deliberately ignored and
// after_seq is the only cursor.
func (TickerServer) Watch(req *demov1.WatchRequest, stream grpc.ServerStreamingServer[demov1.Tick]) error {
	if req.GetSymbol() == "" {
		return errNoSymbol
	}
	interval, err := watchInterval(req.GetIntervalMs())
	if err != nil {
		return err
	}
	if req.GetLimit() < 0 {
		return status.Error(codes.InvalidArgument, "limit must not be negative")
	}
	if req.GetAfterSeq() == math.MaxUint64 {
		// There is no tick after the largest sequence number; without this
		// check seq would wrap around to 0.
		return status.Error(codes.InvalidArgument, "after_seq must be less than 18446744073709551615")
	}

	ctx := stream.Context()
	// The ticker starts before the first send so that the ticks after the
	// first keep a steady pace, whatever the first Send cost.
	ticker := time.NewTicker(interval)
	defer ticker.Stop()

	limit := int64(req.GetLimit())
	seq := req.GetAfterSeq()
	for sent := int64(1); ; sent++ {
		seq++
		tick := &demov1.Tick{
			Symbol: req.GetSymbol(),
			Seq:    seq,
			Price:  Price(req.GetSymbol(), seq),
			Time:   timestamppb.Now(),
		}
		if err := stream.Send(tick); err != nil {
			return err
		}
		if (limit > 0 && sent >= limit) || seq == math.MaxUint64 {
			return nil
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-ticker.C:
		}
	}
}

// Quote returns the latest tick of req.Symbol. Its seq is the number of
// seconds since the Unix epoch, which is also the whole seconds of its time,
// and its price is Price(symbol, seq): a Watch call that reaches the same seq
// reports the same price, and two quotes in the same second agree.
func (TickerServer) Quote(_ context.Context, req *demov1.QuoteRequest) (*demov1.Tick, error) {
	if req.GetSymbol() == "" {
		return nil, errNoSymbol
	}
	now := time.Now()
	seq := uint64(now.Unix()) // positive on any clock set after 1970
	return &demov1.Tick{
		Symbol: req.GetSymbol(),
		Seq:    seq,
		Price:  Price(req.GetSymbol(), seq),
		Time:   timestamppb.New(now),
	}, nil
}

// watchInterval converts interval_ms to the pause between ticks, applying
// the default for 0 and rejecting negative values.
func watchInterval(ms int32) (time.Duration, error) {
	switch {
	case ms < 0:
		return 0, status.Error(codes.InvalidArgument, "interval_ms must not be negative")
	case ms == 0:
		return defaultTickInterval, nil
	default:
		return time.Duration(ms) * time.Millisecond, nil
	}
}

// Price returns the price of symbol at sequence number seq, rounded to two
// decimals. It is a pure function of its arguments, so a resumed stream (or
// another server replica) produces exactly the prices a client would have
// seen without the interruption.
//
// The price is a per-symbol base in [10, 510) moved by a slow sinusoid of up
// to ±8 % (its period and phase also derived from the symbol) plus ±1 % of
// hash noise per seq. It therefore always stays positive.
func Price(symbol string, seq uint64) float64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(symbol)) // hash.Hash.Write never fails.
	sum := h.Sum64()

	base := 10 + float64(sum%50000)/100 // 10.00 .. 509.99
	period := 64 + (sum>>16)%192        // 64 .. 255 ticks per cycle
	phase := (sum >> 32) % period
	// Reducing seq modulo period in integers keeps the angle exact for any
	// seq; converting a huge seq to float64 first would lose precision.
	step := (seq%period + phase) % period
	wave := 0.08 * math.Sin(2*math.Pi*float64(step)/float64(period))
	noise := (float64(mix64(sum^(seq*0x9e3779b97f4a7c15))%2001)/1000 - 1) * 0.01

	return math.Round(base*(1+wave+noise)*100) / 100
}

// mix64 is the SplitMix64 finalizer: it spreads every input bit over the
// whole output, so neighbouring seq values get unrelated noise.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
