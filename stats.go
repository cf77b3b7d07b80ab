package connector

import "sync/atomic"

// Stats are a Conn's receive counters since Dial.
type Stats struct {
	// Datagrams received from the socket, Messages delivered to the caller.
	Datagrams uint64
	Messages  uint64
	// Overruns counts ENOBUFS reports (each is one or more lost messages).
	Overruns uint64
	// Truncated counts datagrams larger than the message buffer.
	Truncated uint64
	// Malformed counts datagrams or messages rejected as invalid.
	Malformed uint64
	// Foreign counts datagrams dropped because their sender was not one
	// that [Config.Senders] accepts.
	Foreign uint64
}

// counters are the live Stats of a Conn, updated by every receive.
type counters struct {
	datagrams, messages, overruns, truncated, malformed, foreign atomic.Uint64
}

// Stats returns the receive counters. It is safe to call at any time, from
// any goroutine.
func (c *Conn) Stats() Stats {
	n := &c.counters
	return Stats{
		Datagrams: n.datagrams.Load(),
		Messages:  n.messages.Load(),
		Overruns:  n.overruns.Load(),
		Truncated: n.truncated.Load(),
		Malformed: n.malformed.Load(),
		Foreign:   n.foreign.Load(),
	}
}
