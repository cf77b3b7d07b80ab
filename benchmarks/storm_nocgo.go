//go:build !(linux && cgo)

package main

// stormAvailable reports whether this build carries the storm generator, which
// needs cgo on Linux (raw thread clones cannot be made from Go code).
const stormAvailable = false
