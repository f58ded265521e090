package bridge

import "time"

// WithStreamJitter replaces the random part of each stream's maximum
// duration (see streamLifetime) with jitter(spread), for deterministic
// tests; the result is clamped to [0, spread].
func WithStreamJitter(jitter func(spread time.Duration) time.Duration) Option {
	return optionFunc(func(c *config) { c.streamJitter = jitter })
}
