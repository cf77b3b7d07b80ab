package connector

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"

	"github.com/cnlink/connector/internal/transport"
)

// This file is the receive path, the one implementation behind both tiers:
// [Reader.Next] hands out the messages of a batch of datagrams one at a time,
// in place; [Conn.Receive] is a Reader with a batch of one whose messages are
// copied out. The Reader asks the Conn for three things only: a filled batch
// (Conn.receive), the admission of a datagram (Conn.admit), and the
// counting of what it delivers (Conn.delivered, Conn.malformed); the Conn's
// fields are its own.

// A Reader is the allocation-free receive path of a Conn. It receives many
// datagrams per system call (recvmmsg) into a batch of pooled buffers, parses
// them in place and hands out one message at a time.
//
// # Buffer lifetime
//
// The Data of a message returned by [Reader.Next] aliases the Reader's
// buffer and is valid only until the next call to Next or
// [Reader.Release]. Copy what you keep.
//
// A Reader is not safe for concurrent use. Several Readers may share one
// Conn; each datagram then goes to one of them. Release returns the buffers
// to the Conn's pool.
type Reader struct {
	c    *Conn
	b    *transport.Batch
	n, i int // datagrams in the batch, and the next one to admit
	d    datagram
	m    Message // the message being returned, decoded in place
	from Sender
	// seen is the Flush count this reader has seen (see [Conn.Flush]): own
	// for a Reader, the Conn's shared one for Receive.
	seen *atomic.Uint64
	own  atomic.Uint64
}

// NewReader returns a Reader with a batch of [Config.BatchSize] buffers of
// [Config.MessageBufferSize] bytes each, taken from the Conn's pool.
func (c *Conn) NewReader() *Reader {
	if !c.usable() {
		return &Reader{c: c} // Next fails: the Conn is not open
	}
	r := &Reader{c: c, b: c.batches.Get().(*transport.Batch)}
	r.seen = &r.own
	r.own.Store(c.flush.gen.Load())
	return r
}

// Release returns the Reader's buffers to the Conn's pool. Messages returned
// earlier become invalid, and Next fails afterwards with an error matching
// ErrClosed that says the Reader was released (the Conn stays open; get
// another Reader with NewReader). Messages the Reader had received and not
// yet returned are discarded and counted in [Stats.Unread]; to read them
// first, call Next until it returns ErrFlushed after a [Conn.Flush].
func (r *Reader) Release() {
	if r.b != nil {
		r.discard()
		r.c.releaseBatch(r.b)
		r.b = nil
		r.d = datagram{}
		r.n, r.i = 0, 0
	}
}

// Next returns the next message and its sender, blocking until one arrives,
// the read deadline expires, [Conn.Flush] is called or the Conn is closed.
// Data aliases the Reader's buffer until the next call (see Reader).
//
// Messages that the sender policy rejects ([Config.Senders]) are dropped and
// counted in [Stats.Foreign], never returned. Errors matching ErrOverrun,
// ErrTruncated and ErrMalformed are reported once and the Reader stays
// usable: the next call continues with the next message, as it does after
// ErrFlushed. Errors matching ErrClosed and os.ErrDeadlineExceeded are
// returned as they occur.
//
// Every call after [Conn.Close] fails with ErrClosed, also while messages
// received earlier are still in the Reader's batch: the first such call
// discards them and counts them in [Stats.Unread] (as does Release). To
// read everything before closing, call [Conn.Flush] and Next until it
// returns ErrFlushed.
func (r *Reader) Next() (Message, Sender, error) {
	for {
		if r.b == nil {
			return Message{}, Sender{}, r.closedErr()
		}
		if r.c.isClosed() {
			r.discard()
			return Message{}, Sender{}, r.closedErr()
		}
		// An exhausted datagram is not walked again: the next one is
		// admitted at once.
		if r.d.more() {
			more, err := r.d.next(&r.m)
			if err != nil {
				return Message{}, r.from, r.c.malformed(err, r.from)
			}
			if more {
				r.c.delivered(1)
				return r.m, r.from, nil
			}
		}
		if err := r.nextDatagram(); err != nil {
			return Message{}, r.from, err
		}
	}
}

// nextDatagram admits the next datagram of the batch for walking, and
// receives a new batch when this one is used up. Datagrams that are dropped
// (a rejected sender) are skipped; a truncated one is reported.
func (r *Reader) nextDatagram() error {
	for {
		if r.i < r.n {
			i := r.i
			r.i++
			ok, err := r.c.admit(&r.d, &r.from, r.b, i)
			if ok || err != nil {
				return err
			}
			continue
		}
		r.from = Sender{}
		n, err := r.c.receive(r.b, r.seen)
		r.n, r.i = n, 0
		if err != nil {
			return err
		}
	}
}

// discard empties the batch, which no Next will return any more (the Conn
// is closed or the Reader released), counting its messages in Stats.Unread.
// The datagrams not admitted yet are admitted first, so that each is counted
// as Next would have counted it: those the sender policy or the buffer size
// drop in Stats.Foreign or Stats.Truncated, and a message that does not
// decode, which ends its datagram, in Stats.Malformed. It is idempotent.
func (r *Reader) discard() {
	var m Message
	var n uint64
	for {
		more, err := r.d.next(&m)
		if more {
			n++
			continue
		}
		if err != nil {
			r.c.counters.malformed.Add(1)
		}
		if r.i >= r.n {
			break
		}
		i := r.i
		r.i++
		var from Sender
		if ok, _ := r.c.admit(&r.d, &from, r.b, i); !ok {
			r.d = datagram{}
		}
	}
	if n > 0 {
		r.c.counters.unread.Add(n)
	}
}

// Receive reads one datagram and returns the messages it holds, which the
// caller owns, with their sender. It allocates; for the allocation-free path
// use [Conn.NewReader]. Messages that the Conn's sender policy rejects are
// dropped, counted in Stats, and Receive waits for the next datagram.
//
// Errors matching ErrOverrun, ErrTruncated, ErrMalformed and ErrFlushed
// leave the Conn usable: call Receive again. When a datagram holds valid
// messages followed by bytes that are not a valid message, Receive returns
// the valid messages together with the error matching ErrMalformed: as with
// io.Reader, process the messages before considering the error. All calls
// to Receive on a Conn count as one reader for [Conn.Flush].
func (c *Conn) Receive() ([]Message, Sender, error) {
	if !c.usable() {
		return nil, Sender{}, &OpError{Op: "receive", Err: errNoConn}
	}
	r := c.singles.get()
	defer c.singles.put(r)
	if c.isClosed() {
		return nil, Sender{}, &OpError{Op: "receive", Err: errClosed}
	}
	if err := r.nextDatagram(); err != nil {
		return nil, r.from, err
	}
	// Copy the datagram's messages into one slice the caller owns, and
	// walk the copy.
	r.d.reset(append([]byte(nil), r.d.rest...))
	var msgs []Message
	for {
		var m Message
		more, err := r.d.next(&m)
		if err != nil {
			c.delivered(len(msgs))
			return msgs, r.from, c.malformed(err, r.from)
		}
		if !more {
			break
		}
		msgs = append(msgs, m)
	}
	c.delivered(len(msgs))
	return msgs, r.from, nil
}

// newSingle returns a Reader with a batch of one for Receive, sharing the
// Conn's Flush count.
func (c *Conn) newSingle() *Reader {
	r := &Reader{c: c, b: transport.NewBatch(1, c.cfg.MessageBufferSize)}
	r.seen = &c.recvSeen
	return r
}

// The Conn's side of the Reader: the only calls a Reader makes.

func (c *Conn) isClosed() bool                  { return c.closed.Load() }
func (c *Conn) delivered(n int)                 { c.counters.messages.Add(uint64(n)) }
func (c *Conn) releaseBatch(b *transport.Batch) { c.batches.Put(b) }

// receive fills b for a Reader whose Flush count is seen, and maps the
// errors.
func (c *Conn) receive(b *transport.Batch, seen *atomic.Uint64) (int, error) {
	if c.closed.Load() {
		return 0, &OpError{Op: "receive", Err: errClosed}
	}
	n, err := c.fill(b, seen)
	if err != nil {
		if errors.Is(err, syscall.ENOBUFS) {
			c.counters.overruns.Add(1)
		}
		return 0, opErr("receive", c.mapErr(err, "receive"))
	}
	// Counted once per batch: one atomic add per system call rather
	// than per datagram.
	c.counters.datagrams.Add(uint64(n))
	return n, nil
}

// admit applies the sender and truncation checks to datagram i of b
// (counted when its batch arrived), sets *from to its sender, then prepares
// d for walking its messages. ok is false when the datagram was dropped.
func (c *Conn) admit(d *datagram, from *Sender, b *transport.Batch, i int) (ok bool, err error) {
	buf, meta := b.Bufs[i], &b.Meta[i]
	*from = SenderFromAddr(meta.Port, meta.Groups)
	if !c.cfg.Senders.Accepts(*from) || meta.Trunc || meta.N > len(buf) {
		return false, c.refuse(*from, len(buf), meta)
	}
	d.reset(buf[:meta.N])
	return true, nil
}

// refuse counts a datagram that admit drops: from a sender the policy
// rejects (no error), or truncated (an error matching ErrTruncated).
func (c *Conn) refuse(from Sender, size int, meta *transport.Meta) error {
	if !c.cfg.Senders.Accepts(from) {
		c.counters.foreign.Add(1)
		return nil
	}
	c.counters.truncated.Add(1)
	return &OpError{Op: "receive", Err: fmt.Errorf("%w: %d bytes from %v against a %d-byte buffer; the datagram was discarded, raise Config.MessageBufferSize (%w)",
		ErrTruncated, meta.N, from, size, syscall.EMSGSIZE)}
}

// malformed counts a message error and names its sender in it.
func (c *Conn) malformed(err error, from Sender) error {
	c.counters.malformed.Add(1)
	var me *MessageError
	if errors.As(err, &me) {
		me.Sender, me.HasSender = from, true
	}
	return &OpError{Op: "receive", Err: err}
}
