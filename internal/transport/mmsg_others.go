//go:build !linux

package transport

// Mmsg is the socket transport's per-batch state, which exists only on
// Linux.
type Mmsg struct{}
