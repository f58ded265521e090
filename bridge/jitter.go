package bridge

import (
	"math/rand/v2"
	"time"
)

// maxStreamJitterDivisor: each stream's maximum duration is shortened by a
// random amount of up to a tenth of it.
const maxStreamJitterDivisor = 10

// streamLifetime returns how long one stream may stay open under a maximum
// stream duration d > 0: d less a random amount of up to d/10, drawn per
// stream. Streams that opened together (at a rollout, or after the last
// hand-off) then end spread over a tenth of d rather than in one wave, so
// reconnects do not pile onto the replicas at once, and the other
// subscribers of a shared call keep it live while one of them reconnects.
// It is the one place that turns the option into a timer's duration, for
// SSE, WebSocket and native gRPC streams alike.
func (c *config) streamLifetime(d time.Duration) time.Duration {
	spread := d / maxStreamJitterDivisor
	if spread <= 0 {
		return d
	}
	if c.streamJitter != nil {
		return d - min(max(c.streamJitter(spread), 0), spread)
	}
	return d - rand.N(spread+1)
}
