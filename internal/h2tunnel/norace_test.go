//go:build !race

package h2tunnel

const raceEnabled = false
