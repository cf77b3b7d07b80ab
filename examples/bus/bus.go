//go:build linux

package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cnlink/connector"
)

// DefaultID is the callback id that bus messages carry. No kernel agent
// registers it (a multicast is also offered to the kernel, which drops
// messages for ids it does not know), and receivers use it to tell bus
// traffic from anything else on the group. The idx spells "bus" in ASCII.
var DefaultID = connector.CBID{Idx: 0x627573, Val: 1}

// Kinds of bus message, carried in the cn_msg flags field, which the
// connector core leaves to its users.
const (
	KindPublish uint16 = 1 // a message to every subscriber of a group
	KindRequest uint16 = 2 // a request that expects one reply
	KindReply   uint16 = 3 // a successful reply
	KindError   uint16 = 4 // a reply that reports an error; the payload says which
)

// A Bus is a connector socket speaking the bus protocol: publish/subscribe
// over a multicast group, and request/reply by port id.
//
// Requests and replies are matched with the connector's "genealogy" rule
// (Documentation/driver-api/connector.rst): the requester picks a fresh seq
// and a random ack; the reply repeats the seq and carries ack+1. Replies that
// do not match an outstanding request are ignored and counted.
//
// A Bus is safe for concurrent use, but Request, Serve and Subscribe each
// read from the socket, so run only one of them at a time.
type Bus struct {
	c  *connector.Conn
	id connector.CBID

	mu    sync.Mutex
	seq   uint32
	stray uint64
}

// Open opens a bus socket that joins the given groups (to subscribe or to
// serve requests multicast on them). Sending to a group or to a port needs
// CAP_NET_ADMIN; joining even-numbered groups needs it too.
func Open(id connector.CBID, groups ...connector.Group) (*Bus, error) {
	c, err := connector.Dial(&connector.Config{Groups: groups})
	if err != nil {
		return nil, err
	}
	return &Bus{c: c, id: id, seq: randUint32()}, nil
}

// Port returns the bus socket's port id: the address requests are sent to.
func (b *Bus) Port() uint32 { return b.c.PortID() }

// Close closes the socket; a Request, Serve or Subscribe in progress returns.
func (b *Bus) Close() error { return b.c.Close() }

// Stray returns the number of received messages that were not for this
// Bus: other ids, other kinds, or replies that matched no request.
func (b *Bus) Stray() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stray
}

func (b *Bus) countStray() {
	b.mu.Lock()
	b.stray++
	b.mu.Unlock()
}

// Publish sends body to every other socket that joined group g.
func (b *Bus) Publish(g connector.Group, body []byte) error {
	if err := b.c.Multicast(g, connector.Message{ID: b.id, Flags: KindPublish, Data: body}); err != nil {
		return fmt.Errorf("publishing to group %d: %w", g, err)
	}
	return nil
}

// A Delivery is a received bus message.
type Delivery struct {
	From connector.Sender
	Kind uint16
	Seq  uint32
	Ack  uint32
	Body []byte
}

// Subscribe calls fn for every message published on the joined groups, until
// ctx ends (it then returns nil), fn returns false, or the socket fails.
// The Body passed to fn is valid only during the call.
func (b *Bus) Subscribe(ctx context.Context, fn func(Delivery) bool) error {
	return b.receive(ctx, func(d Delivery) (bool, error) {
		if d.Kind != KindPublish || d.From.Group == 0 {
			b.countStray()
			return true, nil
		}
		return fn(d), nil
	})
}

// A Handler answers one request. The reply is sent as KindReply, or, if
// the handler fails, the error text is sent as KindError.
type Handler func(req Delivery) ([]byte, error)

// Serve answers every request that reaches the socket, by unicast to its
// port or by multicast on a joined group, until ctx ends (it then returns
// nil) or the socket fails. A reply goes back to the requester's port with
// the request's seq and ack+1. A reply that cannot be delivered within
// replyTimeout is reported through onErr and Serve goes on.
func (b *Bus) Serve(ctx context.Context, h Handler, replyTimeout time.Duration, onErr func(error)) error {
	return b.receive(ctx, func(d Delivery) (bool, error) {
		if d.Kind != KindRequest || d.From.Port == 0 {
			b.countStray()
			return true, nil
		}
		body, herr := h(d)
		kind := KindReply
		if herr != nil {
			kind, body = KindError, []byte(herr.Error())
		}
		if len(body) > connector.MaxMessageSize {
			kind, body = KindError, fmt.Appendf(nil, "reply of %d bytes exceeds the connector's %d-byte limit", len(body), connector.MaxMessageSize)
		}
		_ = b.c.SetWriteDeadline(time.Now().Add(replyTimeout))
		err := b.c.SendTo(d.From.Port, connector.Message{ID: b.id, Seq: d.Seq, Ack: d.Ack + 1, Flags: kind, Data: body})
		if err != nil && onErr != nil {
			onErr(fmt.Errorf("replying to port %d: %w", d.From.Port, err))
		}
		return true, nil
	})
}

// ErrNoReply matches the error of a Request that timed out. It also matches
// os.ErrDeadlineExceeded.
var ErrNoReply = errors.New("no reply")

// A RemoteError is a KindError reply: the server could not answer.
type RemoteError struct {
	Port    uint32
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("port %d answered with an error: %s", e.Port, e.Message)
}

// Request sends body to the bus socket with the given port id, or, with
// port 0, multicasts it on group g, and waits up to timeout (and no longer
// than ctx) for the matching reply, which it returns. The first matching
// reply wins. A KindError reply is returned as a *RemoteError.
func (b *Bus) Request(ctx context.Context, port uint32, g connector.Group, body []byte, timeout time.Duration) (Delivery, error) {
	b.mu.Lock()
	b.seq++
	seq := b.seq
	b.mu.Unlock()
	ack := randUint32()

	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := b.c.SetDeadline(deadline); err != nil {
		return Delivery{}, err
	}
	defer b.c.SetDeadline(time.Time{})

	m := connector.Message{ID: b.id, Seq: seq, Ack: ack, Flags: KindRequest, Data: body}
	target := fmt.Sprintf("port %d", port)
	var err error
	if port != 0 {
		err = b.c.SendTo(port, m)
	} else {
		target = fmt.Sprintf("group %d", g)
		err = b.c.Multicast(g, m)
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return Delivery{}, fmt.Errorf("request to %s: %w: its receive queue stayed full for %v: %w", target, ErrNoReply, timeout, err)
		}
		return Delivery{}, fmt.Errorf("request to %s: %w", target, err)
	}

	var reply Delivery
	err = b.receive(ctx, func(d Delivery) (bool, error) {
		if d.Seq != seq || d.Ack != ack+1 || (d.Kind != KindReply && d.Kind != KindError) || (port != 0 && d.From.Port != port) {
			b.countStray()
			return true, nil
		}
		reply = d
		reply.Body = append([]byte(nil), d.Body...)
		return false, nil
	})
	switch {
	case err == nil && reply.Kind == 0:
		// ctx ended first.
		return Delivery{}, fmt.Errorf("request to %s: %w", target, ctx.Err())
	case errors.Is(err, os.ErrDeadlineExceeded):
		return Delivery{}, fmt.Errorf("request to %s: %w within %v (is a bus server running there?): %w", target, ErrNoReply, timeout, os.ErrDeadlineExceeded)
	case err != nil:
		return Delivery{}, fmt.Errorf("request to %s: %w", target, err)
	}
	if reply.Kind == KindError {
		return reply, &RemoteError{Port: reply.From.Port, Message: string(reply.Body)}
	}
	return reply, nil
}

// receive reads bus messages and passes those with the Bus's id to fn until
// fn returns false, ctx ends (nil), or reading fails. Overruns are reported
// through the error: on a bus, lost messages must not pass unnoticed.
func (b *Bus) receive(ctx context.Context, fn func(Delivery) (bool, error)) error {
	stop := context.AfterFunc(ctx, func() { _ = b.c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	r := b.c.NewReader()
	defer r.Release()
	for {
		m, from, err := r.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if m.ID != b.id {
			b.countStray()
			continue
		}
		more, err := fn(Delivery{From: from, Kind: m.Flags, Seq: m.Seq, Ack: m.Ack, Body: m.Data})
		if err != nil || !more {
			return err
		}
	}
}

func randUint32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.NativeEndian.Uint32(b[:])
}
