//go:build !race

package wirejson

const raceEnabled = false
