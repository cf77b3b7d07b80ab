package connector

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/cnlink/connector/internal/transport"
)

// A Reader is the allocation-free receive path of a Conn. It receives many
// datagrams per system call (recvmmsg) into a batch of pooled buffers, parses
// them in place and hands out one message at a time.
//
// # Buffer lifetime
//
// The Data of a message returned by Next aliases the Reader's buffer and is
// valid only until the next call to Next or Release. Copy what you keep.
//
// A Reader is not safe for concurrent use. Several Readers may share one
// Conn; each datagram then goes to one of them. Release returns the buffers
// to the Conn's pool.
type Reader struct {
	c    *Conn
	b    *transport.Batch
	n, i int
	d    datagram
	m    Message // the message being returned, decoded in place
	from Sender
	seen atomic.Uint64 // the Flush count this Reader has seen
}

// NewReader returns a Reader with a batch of Config.BatchSize buffers of
// Config.MessageBufferSize bytes each, taken from the Conn's pool.
func (c *Conn) NewReader() *Reader {
	r := &Reader{c: c, b: c.batches.Get().(*transport.Batch)}
	r.seen.Store(c.flush.gen.Load())
	return r
}

// Release returns the Reader's buffers to the Conn's pool. Messages returned
// earlier become invalid, and Next fails with ErrClosed afterwards.
func (r *Reader) Release() {
	if r.b != nil {
		r.c.batches.Put(r.b)
		r.b = nil
		r.d = datagram{}
		r.n, r.i = 0, 0
	}
}

// Next returns the next message and its sender, blocking until one arrives,
// the read deadline expires or the Conn is closed. Data aliases the Reader's
// buffer until the next call (see Reader).
//
// Messages that the sender policy rejects (Config.Senders)
// are dropped and counted in Stats.Foreign, never returned. Errors matching
// ErrOverrun, ErrTruncated and ErrMalformed are reported once and the Reader
// stays usable: the next call continues with the next message. Errors
// matching ErrClosed and os.ErrDeadlineExceeded are returned as they occur.
func (r *Reader) Next() (Message, Sender, error) {
	c := r.c
	for {
		// Closed also ends messages still buffered from earlier receives:
		// every call after Close fails.
		if r.b == nil || c.closed.Load() {
			return Message{}, Sender{}, &OpError{Op: "receive", Err: ErrClosed}
		}
		more, err := r.d.next(&r.m)
		if err != nil {
			c.malformed.Add(1)
			return Message{}, r.from, &OpError{Op: "receive", Err: withSender(err, r.from)}
		}
		if more {
			c.messages.Add(1)
			return r.m, r.from, nil
		}
		if r.i < r.n {
			buf, meta := r.b.Bufs[r.i], r.b.Meta[r.i]
			r.i++
			c.datagrams.Add(1)
			// A dropped datagram leaves r.d exhausted, as it already is.
			from, _, err := c.admit(&r.d, buf, meta)
			r.from = from
			if err != nil {
				return Message{}, from, err
			}
			continue
		}
		n, err := c.fill(r.b, &r.seen)
		r.n, r.i = 0, 0
		if err != nil {
			return Message{}, Sender{}, c.recvErr(err)
		}
		r.n = n
	}
}

// A datagram walks the netlink messages of one datagram and the cn_msg
// records packed in each netlink message's payload.
type datagram struct {
	rest []byte // netlink bytes after the current netlink message
	cur  []byte // cn_msg bytes left in the current netlink message
	// fresh is set until the first netlink message has been taken: a
	// datagram must hold at least one, and alignment padding may only
	// follow one. The zero datagram is exhausted, not fresh.
	fresh bool
}

func (d *datagram) reset(b []byte) { d.rest, d.cur, d.fresh = b, nil, true }

// next decodes the next cn_msg into m and returns true, false when the
// datagram is exhausted, or an error, after which the rest of the datagram
// is abandoned. Filling m in place keeps the fast path free of large
// return values.
func (d *datagram) next(m *Message) (bool, error) {
	for {
		if len(d.cur) > 0 {
			if len(d.cur) < HeaderLen && isPadding(d.cur) {
				d.cur = nil
				continue
			}
			n, err := m.decode(d.cur)
			if err != nil {
				d.cur, d.rest = nil, nil
				return false, err
			}
			d.cur = d.cur[n:]
			return true, nil
		}
		if len(d.rest) == 0 {
			if d.fresh {
				d.fresh = false
				return false, &MessageError{Reason: "the datagram is empty: it holds no netlink message"}
			}
			return false, nil
		}
		if len(d.rest) < nlmsgHeaderLen {
			if !d.fresh && isPadding(d.rest) {
				d.rest = nil
				continue
			}
			n := len(d.rest)
			d.rest, d.fresh = nil, false
			return false, &MessageError{Reason: fmt.Sprintf("%d bytes are too short for the %d-byte netlink header", n, nlmsgHeaderLen)}
		}
		d.fresh = false
		// nlmsg_len is compared as a uint32: converted to int it would be
		// negative on 32-bit systems for lengths of 2 GiB and more.
		l32 := binary.NativeEndian.Uint32(d.rest[0:4])
		switch {
		case l32 < nlmsgHeaderLen+HeaderLen:
			d.rest = nil
			return false, &MessageError{Reason: fmt.Sprintf("netlink length %d leaves no room for the %d-byte cn_msg header", l32, HeaderLen)}
		case uint64(l32) > uint64(len(d.rest)):
			n := len(d.rest)
			d.rest = nil
			return false, &MessageError{Reason: fmt.Sprintf("netlink length %d is larger than the %d bytes that arrived", l32, n)}
		}
		l := int(l32)
		d.cur = d.rest[nlmsgHeaderLen:l:l]
		d.rest = d.rest[min(nlmsgAlign(l), len(d.rest)):]
	}
}
