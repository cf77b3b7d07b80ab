package proc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/cnlink/connector"
)

var errNextNil = errors.New("proc: receive: ev is nil: give Next the *Event to fill")

// Next waits for the next event and decodes it into ev, overwriting all of
// it. It does not allocate. ev.Raw aliases the Listener's buffer until the
// next call.
//
// Loss is reported in the stream, not as an error: a KindLost event with a
// count when lost events were counted (see Event.Lost and Mode), or with
// Lost 0 and CPU CPUUnknown when the kernel reports a receive buffer
// overrun, after which the Listener keeps going.
//
// A gap's count arrives with the next event from its CPU, which a quiet
// system may not send for a long time. So when a wait ends with a deadline
// or a Flush (and so when an Events iteration's ctx ends), Next reads the
// socket's drop counter, and if it shows drops that no KindLost record has
// counted, it first returns one more, with CPU CPUUnknown and their count,
// and the error on the next call. A later gap does not count them again.
// Where the Conn has no drop counter (Listener.Drops fails) there is none.
//
// Errors matching connector.ErrClosed (after Close), os.ErrDeadlineExceeded
// (see SetDeadline) and connector.ErrFlushed (see Flush) end a wait; after
// the last two the Listener stays usable. Errors matching
// connector.ErrMalformed or connector.ErrTruncated report one undecodable
// message; the Listener stays usable, and the next call continues. A nil
// ev is an error too, and reads nothing.
func (l *Listener) Next(ev *Event) error {
	if ev == nil {
		return errNextNil
	}
	if l.closed.Load() {
		l.discard()
		return fmt.Errorf("proc: receive: %w", connector.ErrClosed)
	}
	for {
		m, lossFirst, err := l.receive(ev)
		if err != nil || lossFirst {
			return err
		}
		if err := Decode(m, ev); err != nil {
			l.malformed.Add(1)
			return err
		}
		switch {
		case ev.Kind == KindNone:
			if l.ownAcks > 0 {
				l.ownAcks-- // the handshake's, counted by it
			} else {
				l.acks.Add(1)
			}
			continue
		case !l.match(ev):
			l.filtered.Add(1)
			continue
		case ev.Raw != nil:
			l.unknown.Add(1)
		}
		l.events.Add(1)
		return nil
	}
}

// discard drops what the closed Listener still holds, which no Next will
// return, and counts it in Stats.Unread: the messages the subscription read
// ahead (its own acknowledgements and the overruns, counted already, aside),
// those it could not keep, and a message held back behind a KindLost
// record. Releasing the Reader counts its batch in Stats.Conn.Unread. It
// runs on the reading goroutine, and only once.
func (l *Listener) discard() {
	if l.r == nil {
		return
	}
	n := l.earlyLost
	for _, e := range l.early {
		if !e.overrun && !e.ownAck {
			n++
		}
	}
	if l.hasPend {
		n++
	}
	l.early, l.earlyLost, l.earlySkip, l.hasPend, l.pend, l.held = nil, 0, nil, false, connector.Message{}, nil
	l.unread.Add(n)
	l.r.Release()
	l.r = nil
}

// receive is the one step that takes a process event message off the
// socket: the message held back behind a loss record, or the Reader's next
// message from the kernel with id 1:1. When a sequence gap shows lost
// events, or the kernel reports an overrun, it fills ev with the KindLost
// record and returns lossFirst; the message that showed the gap is held
// back for the next call.
func (l *Listener) receive(ev *Event) (m connector.Message, lossFirst bool, err error) {
	if l.hasPend {
		l.hasPend = false
		return l.pend, false, nil
	}
	for {
		var (
			m    connector.Message
			from connector.Sender
			err  error
		)
		switch {
		case len(l.early) > 0:
			e := l.early[0]
			l.early[0] = earlyMsg{}
			if l.early = l.early[1:]; len(l.early) == 0 {
				l.early = nil
			}
			if e.overrun {
				// Counted in Stats.Overruns by the handshake.
				l.loss.overrun()
				*ev = Event{Kind: KindLost, CPU: CPUUnknown}
				return m, true, nil
			}
			if e.ownAck {
				// Counted in Stats.Acks by the handshake: Next skips
				// it uncounted; it keeps the sequence numbers whole.
				l.ownAcks++
			}
			m, from = e.m, e.from
		case l.earlyLost > 0 || l.earlySkip != nil:
			// Past what the handshake kept: the sequence numbers go on
			// from the last message skipped on each CPU, and the events
			// skipped are one loss record.
			for cpu, seq := range l.earlySkip {
				l.loss.seqs.observe(cpu, seq)
			}
			l.earlySkip = nil
			n := l.earlyLost
			if n == 0 {
				continue
			}
			l.earlyLost = 0
			l.lost.Add(n)
			*ev = Event{Kind: KindLost, CPU: CPUUnknown, Lost: uint32(min(n, 1<<32-1))}
			return m, true, nil
		case l.held != nil:
			err, l.held = l.held, nil
		default:
			m, from, err = l.r.Next()
			if err != nil && waitEnded(err) {
				// Drops no gap has shown yet (their CPU has sent
				// nothing since) are reported now, the error next.
				if n := l.loss.pending(); n > 0 {
					l.lost.Add(n)
					l.held = err
					*ev = Event{Kind: KindLost, CPU: CPUUnknown, Lost: uint32(n)}
					return m, true, nil
				}
			}
		}
		if err != nil {
			if l.flushDebt && errors.Is(err, connector.ErrFlushed) {
				// The Flush of a cancelled Events iteration, which
				// that iteration did not wait for: not news to the
				// caller.
				l.flushDebt = false
				continue
			}
			if l.classify(err, ev) {
				return m, true, nil
			}
			// A connector error: proc's prefix, written lazily.
			return m, false, &opError{op: "receive", err: err}
		}
		if !from.Kernel() || m.ID != connector.IDProc {
			l.foreign.Add(1)
			continue
		}
		if len(m.Data) < headerLen {
			return m, false, nil // Decode reports it
		}
		cpu := u32(m.Data, offCPU)
		lost, ooo := l.loss.observe(cpu, m.Seq)
		if ooo {
			l.ooo.Add(1)
		}
		if lost > 0 {
			l.lost.Add(uint64(lost))
			l.pend, l.hasPend = m, true
			*ev = Event{Kind: KindLost, CPU: cpu, Seq: m.Seq - lost, Lost: lost,
				Timestamp: binary.NativeEndian.Uint64(m.Data[offTimestamp:])}
			return m, true, nil
		}
		return m, false, nil
	}
}

// classify counts a receive error, the one place where they are told
// apart. For an overrun it fills ev with a KindLost record and reports
// true: the overrun is delivered as an event, not as an error.
func (l *Listener) classify(err error, ev *Event) bool {
	switch {
	case errors.Is(err, connector.ErrOverrun):
		l.overruns.Add(1)
		l.loss.overrun()
		*ev = Event{Kind: KindLost, CPU: CPUUnknown}
		return true
	case errors.Is(err, connector.ErrMalformed), errors.Is(err, connector.ErrTruncated):
		l.malformed.Add(1)
	}
	return false
}

// waitEnded reports whether err ended a wait that the caller may start
// again: a deadline or a Flush.
func waitEnded(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, connector.ErrFlushed)
}

// recoverable reports whether Next may be called again after err.
func recoverable(err error) bool {
	return errors.Is(err, connector.ErrMalformed) || errors.Is(err, connector.ErrTruncated) ||
		errors.Is(err, connector.ErrFlushed)
}

// userFilter returns the user-space filter for Config.Kinds: the kernel
// kinds selected, and whether that is every kind. Like the kernel, it
// ignores bits outside KindAll and reads a selection of none of them as
// all.
func userFilter(k Kind) (Kind, bool) {
	k &= KindAll
	if k == 0 || k == KindAll {
		return KindAll, true
	}
	return k, false
}

// match applies the user-space filter, with the kernel's rules (cn_filter):
// every event when unfiltered; otherwise an event of a single known kind
// that is selected, or an exit with a nonzero ExitCode when KindNonzeroExit
// is selected. An event whose kind is not a single known kind (a newer
// kernel's kind, several bits, the KindNonzeroExit bit itself) passes only
// when unfiltered.
func (l *Listener) match(ev *Event) bool {
	switch {
	case l.all:
		return true
	case ev.Raw != nil || !ev.Kind.Known() || ev.Kind == KindNone || ev.Kind == KindLost:
		return false
	case l.kinds&ev.Kind != 0:
		return true
	}
	return ev.Kind == KindExit && ev.ExitCode != 0 && l.kinds&KindNonzeroExit != 0
}
