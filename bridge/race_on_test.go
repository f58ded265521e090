//go:build race

package bridge

// raceEnabled: the race detector is on; sync.Pool then drops items on
// purpose (so allocation counts mean nothing) and everything runs slower.
const raceEnabled = true
