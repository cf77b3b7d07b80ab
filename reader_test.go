package connector_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/google/go-cmp/cmp"
)

// These tests drive Reader.Next over the fake kernel, whose datagrams are
// built byte for byte as the kernel builds them.

// readerOn returns a Reader on a fake Conn with a read deadline of fakeWait.
func readerOn(t *testing.T, k *cntest.Kernel, cfg *connector.Config) (*connector.Conn, *connector.Reader) {
	t.Helper()
	c := dialFake(t, k, cfg)
	if err := c.SetReadDeadline(time.Now().Add(fakeWait)); err != nil {
		t.Fatal(err)
	}
	r := c.NewReader()
	t.Cleanup(r.Release)
	return c, r
}

func inject(t *testing.T, k *cntest.Kernel, c *connector.Conn, from connector.Sender, datagram []byte) {
	t.Helper()
	if err := k.InjectRaw(c.PortID(), from, datagram); err != nil {
		t.Fatal(err)
	}
}

// nextOK returns the next message, failing the test on an error.
func nextOK(t *testing.T, r *connector.Reader) (connector.Message, connector.Sender) {
	t.Helper()
	m, from, err := r.Next()
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return m, from
}

// owned copies m out of the Reader's buffer.
func owned(m connector.Message) connector.Message {
	m.Data = append([]byte(nil), m.Data...)
	return m
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

func mustBundle(t *testing.T, msgs ...connector.Message) []byte {
	t.Helper()
	b, err := cntest.Bundle(msgs...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	kernelG1 = connector.Sender{Group: 1}
	w1       = func(seq uint32, data string) connector.Message {
		return connector.Message{ID: connector.IDW1, Seq: seq, Ack: seq + 100, Data: []byte(data)}
	}
)

func TestReaderDatagramShapes(t *testing.T) {
	tests := []struct {
		name string
		in   func(t *testing.T) []byte
		want []connector.Message
	}{
		{
			name: "one message",
			in:   func(*testing.T) []byte { return cntest.MustDatagram(w1(1, "abc")) },
			want: []connector.Message{w1(1, "abc")},
		},
		{
			name: "empty payload",
			in:   func(*testing.T) []byte { return cntest.MustDatagram(w1(1, "")) },
			want: []connector.Message{w1(1, "")},
		},
		{
			name: "bundle of cn_msgs in one netlink message",
			in:   func(t *testing.T) []byte { return mustBundle(t, w1(1, "a"), w1(2, "bb"), w1(3, "")) },
			want: []connector.Message{w1(1, "a"), w1(2, "bb"), w1(3, "")},
		},
		{
			name: "several netlink messages, odd lengths padded",
			in: func(t *testing.T) []byte {
				return cat(cntest.MustDatagram(w1(1, "x")), cntest.MustDatagram(w1(2, "yyyyy")), cntest.MustDatagram(w1(3, "zz")))
			},
			want: []connector.Message{w1(1, "x"), w1(2, "yyyyy"), w1(3, "zz")},
		},
		{
			name: "netlink messages holding bundles",
			in: func(t *testing.T) []byte {
				return cat(mustBundle(t, w1(1, "a"), w1(2, "b")), cntest.MustDatagram(w1(3, "c")), mustBundle(t, w1(4, "d"), w1(5, "eee")))
			},
			want: []connector.Message{w1(1, "a"), w1(2, "b"), w1(3, "c"), w1(4, "d"), w1(5, "eee")},
		},
		{
			name: "last netlink message unpadded",
			in: func(t *testing.T) []byte {
				last := cntest.MustDatagram(w1(2, "q"))
				return cat(cntest.MustDatagram(w1(1, "p")), last[:37])
			},
			want: []connector.Message{w1(1, "p"), w1(2, "q")},
		},
		{
			name: "padded nlmsg_len (ucon.c style)",
			in: func(t *testing.T) []byte {
				d := cntest.MustDatagram(w1(1, "p"))
				binary.NativeEndian.PutUint32(d[0:4], uint32(len(d)))
				return d
			},
			want: []connector.Message{w1(1, "p")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := cntest.New(nil)
			c, r := readerOn(t, k, &connector.Config{Groups: []connector.Group{3}})
			inject(t, k, c, connector.Sender{Group: 3}, tt.in(t))
			// A following datagram shows where this one ended.
			inject(t, k, c, connector.Sender{Group: 3}, cntest.MustDatagram(w1(99, "end")))
			var got []connector.Message
			for {
				m, from, err := r.Next()
				if err != nil {
					t.Fatalf("Next after %d messages: %v", len(got), err)
				}
				if from != (connector.Sender{Group: 3}) {
					t.Errorf("sender %+v, want the kernel on group 3", from)
				}
				if m.Seq == 99 {
					break
				}
				got = append(got, owned(m))
			}
			if diff := cmp.Diff(tt.want, got, cmpBytes); diff != "" {
				t.Errorf("messages (-want +got):\n%s", diff)
			}
			if s := c.Stats(); s.Datagrams != 2 || s.Messages != uint64(len(tt.want)+1) || s.Malformed != 0 {
				t.Errorf("Stats = %+v", s)
			}
		})
	}
}

// TestReaderKernelShapedDone pins that a message as the kernel sends it
// (netlink type NLMSG_DONE, flags 0, nlmsg_pid 0) is a message, not the end
// of a multipart stream, and that no payload byte is read as an errno.
func TestReaderKernelShapedDone(t *testing.T) {
	k := cntest.New(nil)
	c, r := readerOn(t, k, &connector.Config{Groups: []connector.Group{1}})
	ev := connector.Message{ID: connector.IDProc, Seq: 8661, Ack: 0x56, Data: []byte{0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0}}
	d := cntest.MustDatagram(ev)
	if typ, flags := binary.NativeEndian.Uint16(d[4:]), binary.NativeEndian.Uint16(d[6:]); typ != 3 || flags != 0 {
		t.Fatalf("the fixture is not kernel-shaped: type %d flags %#x", typ, flags)
	}
	inject(t, k, c, kernelG1, d)
	// The same with NLM_F_MULTI set: the connector never sets it, and the
	// Reader does not treat it specially either.
	binary.NativeEndian.PutUint16(d[6:], 0x2)
	inject(t, k, c, kernelG1, d)
	for i := range 2 {
		m, from := nextOK(t, r)
		if diff := cmp.Diff(ev, m, cmpBytes); diff != "" || from != kernelG1 {
			t.Errorf("message %d from %+v (-want +got):\n%s", i, from, diff)
		}
	}
}

func TestReaderMalformed(t *testing.T) {
	good := cntest.MustDatagram(w1(1, "good"))
	set32 := func(b []byte, off int, v uint32) []byte {
		b = append([]byte(nil), b...)
		binary.NativeEndian.PutUint32(b[off:], v)
		return b
	}
	set16 := func(b []byte, off int, v uint16) []byte {
		b = append([]byte(nil), b...)
		binary.NativeEndian.PutUint16(b[off:], v)
		return b
	}
	huge := cntest.MustDatagram(connector.Message{ID: connector.IDW1, Data: make([]byte, connector.MaxMessageSize+1)})
	tests := []struct {
		name   string
		in     []byte
		before int    // messages delivered before the error
		reason string // in the error
	}{
		{"empty datagram", nil, 0, "empty"},
		{"shorter than a netlink header", []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0, "10 bytes are too short for the 16-byte netlink header"},
		{"nlmsg_len too small for cn_msg", set32(good, 0, 35), 0, "netlink length 35 leaves no room"},
		{"nlmsg_len zero", set32(good, 0, 0), 0, "netlink length 0"},
		{"nlmsg_len beyond datagram", set32(good, 0, 41), 0, "netlink length 41 is larger than the 40 bytes"},
		{"nlmsg_len huge", set32(good, 0, 0xffffffff), 0, "is larger than the 40 bytes"},
		{"cn_msg len lies", set16(good, 32, 5), 0, "header len 5 is larger than the 4 payload bytes"},
		{"cn_msg len above limit", huge, 0, "exceeds the connector's limit of 16384"},
		{"garbage after the cn_msg", set32(append(cntest.MustDatagram(w1(1, "good")), 9, 9, 9, 9), 0, 44), 1, "4 bytes are too short for the 20-byte cn_msg header"},
		{"garbage after the netlink message", append(append([]byte(nil), good...), 1, 2, 3), 1, "3 bytes are too short for the 16-byte netlink header"},
		{"second netlink message bad", cat(good, set32(good, 0, 17)), 1, "netlink length 17"},
		{"bundle with a cut record", cat(mustBundle(t, w1(1, "a"), w1(2, "b"))[:16+21+19]), 1, ""},
	}
	// Fix up the cut bundle's nlmsg_len to cover what is left.
	cut := tests[len(tests)-1].in
	binary.NativeEndian.PutUint32(cut[0:], uint32(len(cut)))
	tests[len(tests)-1].reason = "19 bytes are too short for the 20-byte cn_msg header"

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := cntest.New(nil)
			c, r := readerOn(t, k, &connector.Config{Groups: []connector.Group{3}})
			from := connector.Sender{Group: 3}
			inject(t, k, c, from, tt.in)
			inject(t, k, c, from, cntest.MustDatagram(w1(7, "next")))
			for i := range tt.before {
				if _, _, err := r.Next(); err != nil {
					t.Fatalf("message %d before the bad bytes: %v", i, err)
				}
			}
			_, efrom, err := r.Next()
			if !errors.Is(err, connector.ErrMalformed) {
				t.Fatalf("Next = %v, want ErrMalformed", err)
			}
			var me *connector.MessageError
			if !errors.As(err, &me) || !strings.Contains(me.Reason, tt.reason) {
				t.Errorf("error %q does not say %q", err, tt.reason)
			}
			if me != nil && (!me.HasSender || me.Sender != from || efrom != from) {
				t.Errorf("error names sender %+v (known %v), Next returned %+v; want %+v", me.Sender, me.HasSender, efrom, from)
			}
			if !strings.Contains(err.Error(), "kernel on group 3") {
				t.Errorf("error %q does not name the sender", err)
			}
			// The rest of the bad datagram is abandoned; the next datagram
			// arrives intact.
			m, _ := nextOK(t, r)
			if m.Seq != 7 || string(m.Data) != "next" {
				t.Errorf("after the error got %+v, want the next datagram", m)
			}
			if s := c.Stats(); s.Malformed != 1 {
				t.Errorf("Stats.Malformed = %d, want 1", s.Malformed)
			}
		})
	}
}

func TestReaderTruncated(t *testing.T) {
	k := cntest.New(nil)
	c, r := readerOn(t, k, &connector.Config{Groups: []connector.Group{3}, MessageBufferSize: 100})
	from := connector.Sender{Group: 3}
	fits := w1(1, strings.Repeat("f", 100-36))
	big := w1(2, strings.Repeat("B", 100-36+1))
	// All three arrive in one recvmmsg batch.
	for _, m := range []connector.Message{fits, big, w1(3, "after")} {
		inject(t, k, c, from, cntest.MustDatagram(m))
	}
	if m, _ := nextOK(t, r); m.Seq != 1 || len(m.Data) != 64 {
		t.Errorf("a datagram that exactly fits arrived as %+v", m)
	}
	m, efrom, err := r.Next()
	if !errors.Is(err, connector.ErrTruncated) || !errors.Is(err, syscall.EMSGSIZE) {
		t.Fatalf("Next = %+v, %v; want ErrTruncated", m, err)
	}
	if !strings.Contains(err.Error(), "104 bytes") || !strings.Contains(err.Error(), "100-byte") || !strings.Contains(err.Error(), "MessageBufferSize") {
		t.Errorf("error %q does not give both sizes and the fix", err)
	}
	if efrom != from || m.Data != nil {
		t.Errorf("truncated datagram returned %+v from %+v; it must never be delivered cut", m, efrom)
	}
	if m, _ := nextOK(t, r); m.Seq != 3 {
		t.Errorf("after the truncated datagram got seq %d, want 3", m.Seq)
	}
	if s := c.Stats(); s.Truncated != 1 || s.Datagrams != 3 || s.Messages != 2 {
		t.Errorf("Stats = %+v", s)
	}
}

func TestReaderOverrun(t *testing.T) {
	k := cntest.New(&cntest.Options{QueueLen: 3})
	c, r := readerOn(t, k, &connector.Config{Groups: []connector.Group{1}})
	for i := range 5 {
		if _, err := k.Multicast(1, connector.Message{ID: connector.IDProc, Seq: uint32(i)}); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := r.Next()
	if !errors.Is(err, connector.ErrOverrun) || !errors.Is(err, syscall.ENOBUFS) {
		t.Fatalf("Next after the queue overflowed: %v, want ErrOverrun", err)
	}
	if !strings.Contains(err.Error(), "ReadBufferSize") {
		t.Errorf("overrun error %q does not say what to do", err)
	}
	for i := range 3 {
		if m, _ := nextOK(t, r); m.Seq != uint32(i) {
			t.Errorf("after the overrun got seq %d, want %d", m.Seq, i)
		}
	}
	if s := c.Stats(); s.Overruns != 1 || s.Messages != 3 {
		t.Errorf("Stats = %+v, want 1 overrun and 3 messages", s)
	}
	// The Reader keeps working.
	_, _ = k.Multicast(1, connector.Message{ID: connector.IDProc, Seq: 10})
	if m, _ := nextOK(t, r); m.Seq != 10 {
		t.Errorf("got seq %d, want 10", m.Seq)
	}
}

func TestReaderSenderPolicy(t *testing.T) {
	user := func(port uint32, g connector.Group) connector.Sender { return connector.Sender{Port: port, Group: g} }
	tests := []struct {
		name      string
		cfg       connector.Config
		from      connector.Sender
		delivered bool
	}{
		{"kernel on group 1", connector.Config{}, kernelG1, true},
		{"userspace on group 1 (spoof)", connector.Config{}, user(555, 1), false},
		{"userspace on group 10 (spoof)", connector.Config{}, user(555, 10), false},
		{"userspace on group 11", connector.Config{}, user(555, 11), true},
		{"userspace unicast", connector.Config{}, user(555, 0), true},
		{"SendersAny on group 1", connector.Config{Senders: connector.SendersAny}, user(555, 1), true},
		{"SendersAny, userspace unicast", connector.Config{Senders: connector.SendersAny}, user(555, 0), true},
		{"SendersKernelOnly, userspace on group 20", connector.Config{Senders: connector.SendersKernelOnly}, user(555, 20), false},
		{"SendersKernelOnly, userspace unicast", connector.Config{Senders: connector.SendersKernelOnly}, user(555, 0), false},
		{"SendersKernelOnly, kernel unicast", connector.Config{Senders: connector.SendersKernelOnly}, connector.Sender{}, true},
		{"SendersKernelOnly, kernel on group 20", connector.Config{Senders: connector.SendersKernelOnly}, connector.Sender{Group: 20}, true},
		{"SendersKernelOnly, userspace on group 1", connector.Config{Senders: connector.SendersKernelOnly}, user(555, 1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := cntest.New(nil)
			cfg := tt.cfg
			c, r := readerOn(t, k, &cfg)
			inject(t, k, c, tt.from, cntest.MustDatagram(connector.Message{ID: connector.IDProc, Seq: 1, Data: []byte("maybe")}))
			inject(t, k, c, connector.Sender{}, cntest.MustDatagram(connector.Message{ID: connector.IDProc, Seq: 2}))
			m, from := nextOK(t, r)
			if got := m.Seq == 1; got != tt.delivered {
				t.Fatalf("message from %v delivered = %v, want %v", tt.from, got, tt.delivered)
			}
			if tt.delivered && from != tt.from {
				t.Errorf("sender = %+v, want %+v", from, tt.from)
			}
			wantForeign := uint64(0)
			if !tt.delivered {
				wantForeign = 1
			}
			if s := c.Stats(); s.Foreign != wantForeign {
				t.Errorf("Stats.Foreign = %d, want %d", s.Foreign, wantForeign)
			}
		})
	}
}

// TestReaderSpoofedMalformed checks that the sender policy is applied before
// the bytes are looked at: a spoofer cannot make a Conn report errors.
func TestReaderSpoofedMalformed(t *testing.T) {
	k := cntest.New(nil)
	c, r := readerOn(t, k, &connector.Config{Groups: []connector.Group{1}})
	inject(t, k, c, connector.Sender{Port: 9, Group: 1}, []byte("not a netlink message at all"))
	_, _ = k.Multicast(1, connector.Message{ID: connector.IDProc, Seq: 5})
	if m, _ := nextOK(t, r); m.Seq != 5 {
		t.Errorf("got %+v", m)
	}
	if s := c.Stats(); s.Foreign != 1 || s.Malformed != 0 {
		t.Errorf("Stats = %+v, want 1 foreign and 0 malformed", s)
	}
}

func TestReaderCloseUnblocksNext(t *testing.T) {
	k := cntest.New(nil)
	c := dialFake(t, k, &connector.Config{Groups: []connector.Group{1}})
	r := c.NewReader()
	defer r.Release()
	type result struct {
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		_, _, err := r.Next()
		done <- result{err, time.Now()}
	}()
	if !k.WaitReceiving(c.PortID(), fakeWait) {
		t.Fatal("Next never blocked")
	}
	closed := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		if !errors.Is(res.err, connector.ErrClosed) || !errors.Is(res.err, os.ErrClosed) {
			t.Errorf("blocked Next returned %v, want ErrClosed", res.err)
		}
		if d := res.at.Sub(closed); d > time.Second {
			t.Errorf("Next returned %v after Close", d)
		}
	case <-time.After(fakeWait):
		t.Fatal("Close did not unblock Next")
	}
}

// injectUnread queues, for one receive, a bundle of two messages (seq 1
// and 2), a datagram of one (3), a userspace multicast on the kernel's
// group 3 (foreign under SendersDefault), three bytes that are no netlink
// message, and a datagram of one (4), and has r return the first message.
// It returns the Stats that must hold once the rest is discarded: one
// message returned, three unread, the foreign and the malformed datagrams
// counted as Next would have counted them.
func injectUnread(t *testing.T, k *cntest.Kernel, c *connector.Conn, r *connector.Reader) connector.Stats {
	t.Helper()
	inject(t, k, c, connector.Sender{Group: 3}, mustBundle(t, w1(1, "a"), w1(2, "b")))
	inject(t, k, c, connector.Sender{Group: 3}, cntest.MustDatagram(w1(3, "c")))
	inject(t, k, c, connector.Sender{Port: 77, Group: 3}, cntest.MustDatagram(w1(9, "spoof")))
	inject(t, k, c, connector.Sender{Group: 3}, []byte{1, 2, 3})
	inject(t, k, c, connector.Sender{Group: 3}, cntest.MustDatagram(w1(4, "d")))
	if m, _ := nextOK(t, r); m.Seq != 1 {
		t.Fatalf("first message seq %d", m.Seq)
	}
	if got := k.Queued(c.PortID()); got != 0 {
		t.Fatalf("%d datagrams left in the socket; want all five in the Reader's batch", got)
	}
	return connector.Stats{Datagrams: 5, Messages: 1, Unread: 3, Foreign: 1, Malformed: 1}
}

// TestReaderAfterCloseWithBufferedMessages checks that Close ends the
// stream even while the Reader still holds received datagrams, and that
// what it held is counted: in Stats.Unread, or where Next would have
// counted it (a foreign sender, a malformed datagram), once.
func TestReaderAfterCloseWithBufferedMessages(t *testing.T) {
	k := cntest.New(nil)
	c := dialFake(t, k, &connector.Config{Groups: []connector.Group{3}})
	_ = c.SetReadDeadline(time.Now().Add(fakeWait))
	r := c.NewReader()
	want := injectUnread(t, k, c, r)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		m, _, err := r.Next()
		if !errors.Is(err, connector.ErrClosed) {
			t.Errorf("Next %d after Close = %+v, %v; want ErrClosed", i, m, err)
		}
	}
	r.Release()
	if d := cmp.Diff(want, c.Stats()); d != "" {
		t.Errorf("Stats after Close, Next and Release (-want +got):\n%s", d)
	}
}

// TestReaderReleaseCountsUnread checks that Release counts the messages it
// discards, and that the Conn goes on with a new Reader.
func TestReaderReleaseCountsUnread(t *testing.T) {
	k := cntest.New(nil)
	c := dialFake(t, k, &connector.Config{Groups: []connector.Group{3}})
	_ = c.SetReadDeadline(time.Now().Add(fakeWait))
	r := c.NewReader()
	want := injectUnread(t, k, c, r)
	r.Release()
	r.Release()
	if d := cmp.Diff(want, c.Stats()); d != "" {
		t.Errorf("Stats after Release (-want +got):\n%s", d)
	}
	r2 := c.NewReader()
	defer r2.Release()
	inject(t, k, c, connector.Sender{Group: 3}, cntest.MustDatagram(w1(5, "e")))
	if m, _ := nextOK(t, r2); m.Seq != 5 {
		t.Errorf("new Reader got seq %d, want 5", m.Seq)
	}
	want.Datagrams, want.Messages = 6, 2
	if d := cmp.Diff(want, c.Stats()); d != "" {
		t.Errorf("Stats after the new Reader's message (-want +got):\n%s", d)
	}
}

func TestReaderRelease(t *testing.T) {
	k := cntest.New(nil)
	c := dialFake(t, k, &connector.Config{Groups: []connector.Group{1}})
	r := c.NewReader()
	r.Release()
	r.Release() // twice is harmless
	if _, _, err := r.Next(); !errors.Is(err, connector.ErrClosed) {
		t.Errorf("Next after Release = %v, want ErrClosed", err)
	}
	// The Conn is unaffected, and a new Reader works.
	_, _ = k.Multicast(1, connector.Message{Seq: 4})
	_ = c.SetReadDeadline(time.Now().Add(fakeWait))
	r2 := c.NewReader()
	defer r2.Release()
	if m, _ := nextOK(t, r2); m.Seq != 4 {
		t.Errorf("new Reader got seq %d", m.Seq)
	}
}

func TestReaderDeadline(t *testing.T) {
	k := cntest.New(nil)
	c := dialFake(t, k, &connector.Config{Groups: []connector.Group{1}})
	r := c.NewReader()
	defer r.Release()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, _, err := r.Next()
	var oe *connector.OpError
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &oe) || !oe.Timeout() || oe.Op != "receive" {
		t.Fatalf("Next past the deadline = %v, want a receive timeout", err)
	}
	// The Reader stays usable once the deadline moves.
	_ = c.SetReadDeadline(time.Now().Add(fakeWait))
	_, _ = k.Multicast(1, connector.Message{Seq: 6})
	if m, _ := nextOK(t, r); m.Seq != 6 {
		t.Errorf("got seq %d after the deadline moved", m.Seq)
	}
}

func TestReaderBatchesAcrossCalls(t *testing.T) {
	k := cntest.New(&cntest.Options{QueueLen: 1000})
	c, r := readerOn(t, k, &connector.Config{Groups: []connector.Group{1}, BatchSize: 4})
	const n = 50
	for i := range n {
		_, _ = k.Multicast(1, connector.Message{ID: connector.IDProc, Seq: uint32(i), Data: []byte{byte(i)}})
	}
	for i := range n {
		m, _ := nextOK(t, r)
		if m.Seq != uint32(i) || len(m.Data) != 1 || m.Data[0] != byte(i) {
			t.Fatalf("message %d = %+v", i, m)
		}
	}
	if s := c.Stats(); s.Datagrams != n || s.Messages != n {
		t.Errorf("Stats = %+v", s)
	}
}

// TestReaderNextAllocatesNothing guards the receive fast path: in steady
// state Reader.Next allocates nothing per message. The fake kernel's receive
// is itself allocation-free, so every allocation seen here is the Reader's.
// conn_linux_integration_test.go checks the same on a real socket.
func TestReaderNextAllocatesNothing(t *testing.T) {
	const runs = 1000
	k := cntest.New(&cntest.Options{QueueLen: 4 * runs})
	c, r := readerOn(t, k, &connector.Config{Groups: []connector.Group{1}})
	ev := connector.Message{ID: connector.IDProc, Data: make([]byte, 40)}
	for range 2 * runs {
		if _, err := k.Multicast(1, ev); err != nil {
			t.Fatal(err)
		}
	}
	// Warm up: the first receive builds the batch's state.
	nextOK(t, r)
	allocs := testing.AllocsPerRun(runs, func() {
		if _, _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Reader.Next: %v allocations per message, want 0", allocs)
	}

	// Kernel sends interleaved with reads, including bundles, on a fresh
	// kernel: the fake's queue slots keep the size of the largest datagram
	// they held, and the first phase left them sized for single events.
	k = cntest.New(nil)
	c, r = readerOn(t, k, &connector.Config{Groups: []connector.Group{1}})
	bundle := mustBundle(t, ev, ev, ev)
	allocs = testing.AllocsPerRun(runs, func() {
		if err := k.InjectRaw(c.PortID(), kernelG1, bundle); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, _, err := r.Next(); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("inject and read a 3-message bundle: %v allocations, want 0", allocs)
	}
}
