package w1

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/cnlink/connector"
)

// An EventKind says what a notification reports. Its zero value,
// NoEvent, is no event: the Event that Watch, Poll and EventHandler give
// with an error has it, and prints as "no event". The other values are the
// notification message types (W1_SLAVE_ADD to W1_MASTER_REMOVE) plus one
// (see [EventKind.MsgType]).
type EventKind uint8

// The kinds of events.
const (
	NoEvent       EventKind = 0
	SlaveAdded              = EventKind(MsgSlaveAdd) + 1
	SlaveRemoved            = EventKind(MsgSlaveRemove) + 1
	MasterAdded             = EventKind(MsgMasterAdd) + 1
	MasterRemoved           = EventKind(MsgMasterRemove) + 1
)

func (k EventKind) String() string {
	switch k {
	case NoEvent:
		return "no event"
	case SlaveAdded:
		return "slave added"
	case SlaveRemoved:
		return "slave removed"
	case MasterAdded:
		return "master added"
	case MasterRemoved:
		return "master removed"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// MsgType returns the notification message type of k (MsgSlaveAdd for
// SlaveAdded, ...); ok is false for NoEvent and unknown kinds.
func (k EventKind) MsgType() (t MsgType, ok bool) {
	if k < SlaveAdded || k > MasterRemoved {
		return 0, false
	}
	return MsgType(k - 1), true
}

// An Event is a notification of the w1 agent: a bus master or a slave was
// added or removed.
type Event struct {
	Kind EventKind
	// Master is the master's id for master events. For slave events the
	// kernel does not say which master the slave is on: Master is 0 in
	// events from Watch and EventHandler, and set in events from Poll.
	Master MasterID
	// Slave is the slave's id for slave events.
	Slave SlaveID
	// Seq is the kernel's sequence number of the notification, counted per
	// bus master from 1 (so a gap is per master, not global). Poll's
	// synthesised events have Seq 0.
	Seq uint32
}

// String returns the kind and the id it is about, "slave added
// 28-0000079e36c0", or "no event" for an Event with Kind NoEvent (the zero
// Event).
func (e Event) String() string {
	switch e.Kind {
	case SlaveAdded, SlaveRemoved:
		return fmt.Sprintf("%v %v", e.Kind, e.Slave)
	case MasterAdded, MasterRemoved:
		return fmt.Sprintf("%v %v", e.Kind, e.Master)
	}
	return e.Kind.String()
}

// ParseEvent decodes a notification of the w1 agent: a message with id 3:1
// holding one w1_netlink_msg of a notification type. Anything else is an
// error matching connector.ErrMalformed.
func ParseEvent(m connector.Message) (Event, error) {
	if m.ID != ID {
		return Event{}, malformed("notification has id %v, not %v", m.ID, ID)
	}
	msgs, err := ParseMsgs(m.Data)
	if err != nil {
		return Event{}, err
	}
	if len(msgs) != 1 || msgs[0].Type > MsgMasterRemove {
		return Event{}, malformed("a notification holds one SLAVE_ADD, SLAVE_REMOVE, MASTER_ADD or MASTER_REMOVE message; got %d messages, the first of type %v", len(msgs), firstType(msgs))
	}
	e := Event{Kind: EventKind(msgs[0].Type) + 1, Seq: m.Seq}
	switch e.Kind {
	case MasterAdded, MasterRemoved:
		e.Master = msgs[0].Master()
	default:
		e.Slave = msgs[0].Slave()
	}
	return e, nil
}

func firstType(msgs []Msg) string {
	if len(msgs) == 0 {
		return "none"
	}
	return msgs[0].Type.String()
}

// notEvent describes a message that is not a notification.
func notEvent(m connector.Message, from connector.Sender) error {
	return fmt.Errorf("%w: %v seq %d ack %d with %d bytes from %v; notifications are id %d:%d from the kernel on group %d (a reply that came after its request ended?)", ErrNotEvent, m.ID, m.Seq, m.Ack, len(m.Data), from, ID.Idx, ID.Val, Group)
}

// isEvent reports whether a message is a notification by its sender: the
// kernel, on group 3.
func isEvent(from connector.Sender) bool { return from.Kernel() && from.Group == Group }

// ErrNotEvent matches the error that EventHandler gives its function, and
// Watch yields, for a message that is not a notification: not sent by the
// kernel on group 3 (a reply that arrived after its request ended, say), or
// for Watch, with an id other than 3:1. The message was read and is gone:
// the error says what it was.
var ErrNotEvent = errors.New("w1: not a notification")

// EventHandler returns a connector.Handler for the route of id 3:1 on a
// connector.Mux that serves a Conn joined to group 3: it calls fn with each
// notification, or with the error of one that does not decode, or, for a
// message that did not come from the kernel on group 3, with an error
// matching [ErrNotEvent] that describes it: nothing on the route is
// dropped unseen. fn runs on the
// Mux's goroutine and must not block: wrap slow work, and requests on the
// Conn the Mux serves (which would fail with connector.ErrCallInHandler),
// in [connector.Queue] or hand them to another goroutine. A handler cannot
// tell whether the w1 agent is registered: without it no notification
// comes, so check Conn.Agents for [ID] first (Watch does).
//
//	mx.Handle(w1.ID, w1.EventHandler(func(e w1.Event, err error) { ... }))
//
// A nil fn panics at once, as connector.Mux.Handle does for a nil handler.
func EventHandler(fn func(Event, error)) connector.Handler {
	if fn == nil {
		panic("w1: EventHandler: nil function")
	}
	return connector.HandlerFunc(func(r connector.Request) {
		if !isEvent(r.From) {
			fn(Event{}, notEvent(r.Msg, r.From))
			return
		}
		e, err := ParseEvent(r.Msg)
		fn(e, wrap("notification", "", err))
	})
}

// Watch yields the w1 agent's notifications until ctx ends (the iteration
// then ends after yielding ctx.Err(), as proc.Listener.Events does) or the
// loop breaks. With a nil c it opens a
// socket of its own, joined to group 3, and closes it at the end; otherwise
// it reads c, which must have joined group 3 and must not be read by anyone
// else meanwhile. Receive errors are yielded with a zero Event: an error
// matching connector.ErrOverrun means notifications were lost (resync with
// Conn.Masters and Conn.Slaves) and iteration goes on, as it does after a
// malformed message and after a message that is not a notification (any
// other id or sender; an error matching [ErrNotEvent] describes it); any
// other error ends it. Every error comes with the zero Event (Kind
// NoEvent).
//
// When the w1 agent is not registered (no wire module: nothing would ever
// be sent), the first and only yielded error matches connector.ErrNoAgent,
// at once; Watch asks connector.Agents, or c.Agents for a given c, and goes
// on when the list cannot be read (outside the initial network namespace).
//
// Joining group 3 needs CAP_NET_ADMIN before Linux 6.6 (from 6.6 on anyone
// may join it, through a quirk of the connector's bind check that a future
// kernel may fix). Without it the first yielded error matches
// os.ErrPermission; Conn.Poll is the fallback that needs no privilege. A
// nil ctx is the only error yielded, and nothing is read.
func Watch(ctx context.Context, c *connector.Conn) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		if ctx == nil {
			yield(Event{}, nilCtx("watch"))
			return
		}
		if c == nil {
			if err := noAgent(connector.Agents()); err != nil {
				yield(Event{}, err)
				return
			}
			var err error
			c, err = connector.Dial(&connector.Config{Groups: []connector.Group{Group}, ReadBufferSize: 256 << 10})
			if err != nil {
				if errors.Is(err, os.ErrPermission) {
					err = wrap("watch", "", fmt.Errorf("%w; w1 notifications (group 3) need it before Linux 6.6: use Conn.Poll instead", err))
				}
				yield(Event{}, wrap("watch", "", err))
				return
			}
			defer c.Close()
		} else if err := noAgent(c.Agents()); err != nil {
			yield(Event{}, err)
			return
		}
		stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Unix(1, 0)) })
		defer func() {
			if !stop() {
				_ = c.SetReadDeadline(time.Time{})
			}
		}()
		r := c.NewReader()
		defer r.Release()
		for {
			m, from, err := r.Next()
			if err != nil {
				if ctx.Err() != nil {
					yield(Event{}, ctx.Err())
					return
				}
				if !yield(Event{}, wrap("watch", "", err)) {
					return
				}
				if errors.Is(err, connector.ErrOverrun) || errors.Is(err, connector.ErrMalformed) || errors.Is(err, connector.ErrTruncated) {
					continue
				}
				return
			}
			if !isEvent(from) || m.ID != ID {
				// Read, so nobody else will see it: say so.
				if !yield(Event{}, notEvent(m, from)) {
					return
				}
				continue
			}
			e, err := ParseEvent(m)
			if !yield(e, wrap("watch", "", err)) {
				return
			}
		}
	}
}

// noAgent fails with an error matching connector.ErrNoAgent when the list
// of the kernel's agents (the results of connector.Agents or Conn.Agents)
// was read and holds no w1 agent. An unreadable list says nothing.
func noAgent(agents []connector.Agent, err error) error {
	if err != nil || slices.ContainsFunc(agents, func(a connector.Agent) bool { return a.ID == ID }) {
		return nil
	}
	return wrap("watch", "", connector.NoAgentError("watch", ID, agents))
}

// Poll is the notification fallback that needs no privilege: it lists the
// masters and their registered slaves (LIST_MASTERS and LIST_SLAVES, no bus
// traffic) every interval and yields the differences as events, with Master
// set for slave events too and Seq 0. The first listing yields an added
// event for everything already present. When ctx ends it yields ctx.Err()
// and stops, as Watch does; a failed listing is yielded as an error (with
// the zero Event, Kind NoEvent) and polling goes on.
//
// Changes that come and go within one interval are not seen, and a slave
// that moves from one master to another shows as removed and added. An
// interval that is not positive is yielded as the only error, matching
// connector.ErrInvalidConfig; so is a nil ctx, with an error that says so.
func (w *Conn) Poll(ctx context.Context, interval time.Duration) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		if ctx == nil {
			yield(Event{}, nilCtx("poll"))
			return
		}
		if interval <= 0 {
			yield(Event{}, fmt.Errorf("w1: poll: %w: the interval is %v; give a positive duration", connector.ErrInvalidConfig, interval))
			return
		}
		type key struct {
			m MasterID
			s SlaveID
		}
		var masters []MasterID
		slaves := map[key]bool{}
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			nm, ns, err := w.snapshot(ctx)
			if ctx.Err() != nil {
				yield(Event{}, ctx.Err())
				return
			}
			if err != nil {
				if !yield(Event{}, err) {
					return
				}
			} else {
				var evs []Event
				for _, m := range nm {
					if !slices.Contains(masters, m) {
						evs = append(evs, Event{Kind: MasterAdded, Master: m})
					}
				}
				next := map[key]bool{}
				for _, m := range nm {
					for _, s := range ns[m] {
						k := key{m, s}
						next[k] = true
						if !slaves[k] {
							evs = append(evs, Event{Kind: SlaveAdded, Master: m, Slave: s})
						}
					}
				}
				var gone []Event
				for k := range slaves {
					if !next[k] {
						gone = append(gone, Event{Kind: SlaveRemoved, Master: k.m, Slave: k.s})
					}
				}
				slices.SortFunc(gone, func(a, b Event) int {
					return cmp.Or(cmp.Compare(a.Master, b.Master), bytes.Compare(a.Slave[:], b.Slave[:]))
				})
				evs = append(evs, gone...)
				for _, m := range masters {
					if !slices.Contains(nm, m) {
						evs = append(evs, Event{Kind: MasterRemoved, Master: m})
					}
				}
				for _, e := range evs {
					if !yield(e, nil) {
						return
					}
				}
				masters, slaves = nm, next
			}
			select {
			case <-ctx.Done():
				yield(Event{}, ctx.Err())
				return
			case <-t.C:
			}
		}
	}
}

func (w *Conn) snapshot(ctx context.Context) ([]MasterID, map[MasterID][]SlaveID, error) {
	ms, err := w.Masters(ctx)
	if err != nil {
		return nil, nil, err
	}
	out := make(map[MasterID][]SlaveID, len(ms))
	for _, m := range ms {
		s, err := w.Slaves(ctx, m)
		if errors.Is(err, syscall.ENODEV) {
			continue // removed between the two requests
		}
		if err != nil {
			return nil, nil, err
		}
		out[m] = s
	}
	return ms, out, nil
}
