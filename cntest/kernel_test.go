package cntest_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/testutil"
)

// wait bounds every blocking call in these tests, so that a bug fails the
// test instead of hanging it.
const wait = 5 * time.Second

// dial opens a Conn on k, closed when the test ends.
func dial(t *testing.T, k *cntest.Kernel, cfg *connector.Config) *connector.Conn {
	t.Helper()
	return testutil.Dial(t, k.Dial, cfg)
}

func groups(gs ...connector.Group) *connector.Config { return &connector.Config{Groups: gs} }

// receive reads one datagram's messages, failing the test after wait.
func receive(t *testing.T, c *connector.Conn) ([]connector.Message, connector.Sender) {
	t.Helper()
	return testutil.Receive(t, c, wait)
}

// receiveErr reads once and returns the error, failing the test after wait.
func receiveErr(t *testing.T, c *connector.Conn) error {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.Receive()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("port %d: nothing arrived within %v", c.PortID(), wait)
	}
	return err
}

func msg(idx uint32, seq uint32, data string) connector.Message {
	return connector.Message{ID: connector.CBID{Idx: idx, Val: 1}, Seq: seq, Data: []byte(data)}
}

func equalMsg(a, b connector.Message) bool {
	return a.ID == b.ID && a.Seq == b.Seq && a.Ack == b.Ack && a.Flags == b.Flags && bytes.Equal(a.Data, b.Data)
}

func TestDatagramLayout(t *testing.T) {
	m := connector.Message{ID: connector.CBID{Idx: 0x01020304, Val: 0x05060708}, Seq: 0x0a0b0c0d, Ack: 0x11121314, Flags: 0x2122, Data: []byte{0xaa, 0xbb, 0xcc}}
	b, err := cntest.Datagram(m)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 40)
	ne := binary.NativeEndian
	ne.PutUint32(want[0:], 39) // nlmsg_len is not padded
	ne.PutUint16(want[4:], 3)  // NLMSG_DONE
	ne.PutUint16(want[6:], 0)
	ne.PutUint32(want[8:], m.Seq)
	ne.PutUint32(want[12:], 0)
	ne.PutUint32(want[16:], m.ID.Idx)
	ne.PutUint32(want[20:], m.ID.Val)
	ne.PutUint32(want[24:], m.Seq)
	ne.PutUint32(want[28:], m.Ack)
	ne.PutUint16(want[32:], 3)
	ne.PutUint16(want[34:], m.Flags)
	copy(want[36:], m.Data) // and one zero byte of padding
	if !bytes.Equal(b, want) {
		t.Fatalf("Datagram =\n% x\nwant\n% x", b, want)
	}

	if _, err := cntest.Datagram(connector.Message{Data: make([]byte, 65536)}); err == nil || !strings.Contains(err.Error(), "16-bit len") {
		t.Errorf("Datagram with 65536 payload bytes: err = %v, want one naming the 16-bit len", err)
	}
	if b, err := cntest.Datagram(connector.Message{Data: make([]byte, 65535)}); err != nil || len(b) != 36+65535+1 {
		t.Errorf("Datagram with 65535 payload bytes = %d bytes, %v; want %d bytes", len(b), err, 36+65535+1)
	}
}

func TestBundleLayout(t *testing.T) {
	a := connector.Message{ID: connector.CBID{Idx: 3, Val: 1}, Seq: 7, Data: []byte{1, 2, 3}}
	b := connector.Message{ID: connector.CBID{Idx: 3, Val: 1}, Seq: 8, Data: []byte{4}}
	got, err := cntest.Bundle(a, b)
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	want = cntest.AppendNetlink(want, cntest.NetlinkHeader{Type: cntest.TypeDone, Seq: 7}, mustAppend(t, mustAppend(t, nil, a), b))
	if !bytes.Equal(got, want) {
		t.Fatalf("Bundle =\n% x\nwant\n% x", got, want)
	}
	if l := binary.NativeEndian.Uint32(got[0:4]); l != 16+20+3+20+1 {
		t.Errorf("nlmsg_len = %d, want %d (records packed without alignment)", l, 16+20+3+20+1)
	}
	if len(got)%4 != 0 {
		t.Errorf("bundle of %d bytes is not padded to 4", len(got))
	}
}

func mustAppend(t *testing.T, b []byte, m connector.Message) []byte {
	t.Helper()
	b, err := cntest.AppendMessage(b, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Datagrams captured from the kernel on Linux 6.18 x86_64 (little-endian):
// the process events connector's ack to a LISTEN with ack 0x355054d4, and a
// fork and an exit event. TestIntegrationDatagramMatchesKernel checks the
// same against the running kernel.
var capturedLE = map[string]string{
	"ack":  "4c000000030000006d3c00000000000001000000010000006d3c0000d55450352800000000000000010000004ff5c4c1a1000000000000000000000000000000000000000000000000000000",
	"fork": "4c00000003000000703c0000000000000100000001000000703c000000000000280000000100000001000000f101ccc1a10000009f4700009f470000a4470000a44700000000000000000000",
	"exit": "4c00000003000000763c0000000000000100000001000000763c000000000000280000000000008001000000a50701c2a1000000a4470000a447000000030000110000009f4700009f470000",
}

func TestDatagramMatchesCapturedKernelBytes(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the fixtures were captured on a little-endian kernel; TestIntegrationDatagramMatchesKernel covers this machine")
	}
	for name, h := range capturedLE {
		t.Run(name, func(t *testing.T) {
			real, err := hex.DecodeString(h)
			if err != nil {
				t.Fatal(err)
			}
			// Rebuild the message from the cn_msg fields and payload only.
			m := cnMessage(binary.LittleEndian, real)
			got := cntest.MustDatagram(m)
			if !bytes.Equal(got, real) {
				t.Errorf("fake kernel datagram differs from the real one:\n got % x\nreal % x", got, real)
			}
		})
	}
}

// cnMessage decodes the cn_msg of a one-message datagram (the nlmsghdr's 16
// bytes, then the cn_msg) with code of the test's own, so that the fake's
// encoder is checked against an independent reading of real kernel bytes.
// Data is left empty when the cn_msg's len runs past the datagram.
func cnMessage(bo binary.ByteOrder, b []byte) connector.Message {
	m := connector.Message{
		ID:    connector.CBID{Idx: bo.Uint32(b[16:]), Val: bo.Uint32(b[20:])},
		Seq:   bo.Uint32(b[24:]),
		Ack:   bo.Uint32(b[28:]),
		Flags: bo.Uint16(b[34:]),
	}
	if end := 36 + int(bo.Uint16(b[32:])); end <= len(b) {
		m.Data = b[36:end]
	}
	return m
}

func TestPortIDs(t *testing.T) {
	k := cntest.New(nil)
	seen := map[uint32]bool{}
	for i := range 4 {
		c := dial(t, k, nil)
		p := c.PortID()
		if p == 0 || seen[p] {
			t.Fatalf("conn %d got port %d (0 is the kernel; ids must be unique)", i, p)
		}
		seen[p] = true
	}
	ports := k.Ports()
	if len(ports) != 4 {
		t.Fatalf("Ports = %v, want 4", ports)
	}
	for _, p := range ports {
		if !seen[p] {
			t.Errorf("Ports lists %d, which no Conn has", p)
		}
	}
}

func TestUnicastBetweenConns(t *testing.T) {
	k := cntest.New(nil)
	a, b := dial(t, k, nil), dial(t, k, nil)
	m := connector.Message{ID: connector.CBID{Idx: 30, Val: 2}, Seq: 9, Ack: 10, Flags: 1, Data: []byte("hello")}
	if err := a.SendTo(b.PortID(), m); err != nil {
		t.Fatal(err)
	}
	msgs, from := receive(t, b)
	if len(msgs) != 1 || !equalMsg(msgs[0], m) {
		t.Fatalf("received %+v, want %+v", msgs, m)
	}
	if want := (connector.Sender{Port: a.PortID()}); from != want {
		t.Errorf("sender = %+v, want %+v", from, want)
	}
	if n := k.Queued(a.PortID()); n != 0 {
		t.Errorf("sender received %d datagrams", n)
	}

	err := a.SendTo(12345, m)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("SendTo a missing port: %v, want ECONNREFUSED", err)
	}
}

func TestMulticastBetweenConns(t *testing.T) {
	k := cntest.New(nil)
	sender := dial(t, k, groups(20))
	m1, m2 := dial(t, k, groups(20)), dial(t, k, groups(20, 21))
	other := dial(t, k, groups(21))
	m := msg(20, 1, "to group 20")
	if err := sender.Multicast(20, m); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*connector.Conn{m1, m2} {
		msgs, from := receive(t, c)
		if len(msgs) != 1 || !equalMsg(msgs[0], m) {
			t.Errorf("port %d received %+v", c.PortID(), msgs)
		}
		if want := (connector.Sender{Port: sender.PortID(), Group: 20}); from != want {
			t.Errorf("port %d: sender = %+v, want %+v", c.PortID(), from, want)
		}
	}
	if n := k.Queued(sender.PortID()); n != 0 {
		t.Errorf("the sender received its own multicast (%d datagrams)", n)
	}
	if n := k.Queued(other.PortID()); n != 0 {
		t.Errorf("a member of group 21 only received %d datagrams", n)
	}
	if got := k.Members(20); len(got) != 3 {
		t.Errorf("Members(20) = %v, want 3 ports", got)
	}
}

func TestKernelMulticastAndUnicast(t *testing.T) {
	k := cntest.New(nil)
	a, b := dial(t, k, groups(1)), dial(t, k, nil)
	ev := connector.Message{ID: connector.IDProc, Seq: 77, Data: make([]byte, 40)}
	n, err := k.Multicast(1, ev, ev)
	if err != nil || n != 2 {
		t.Fatalf("Multicast = %d, %v; want 2 datagrams queued", n, err)
	}
	for range 2 {
		msgs, from := receive(t, a)
		if len(msgs) != 1 || !equalMsg(msgs[0], ev) || from != (connector.Sender{Group: 1}) {
			t.Fatalf("received %+v from %+v", msgs, from)
		}
	}
	if k.Queued(b.PortID()) != 0 {
		t.Error("a socket outside group 1 received the multicast")
	}
	if err := k.Unicast(b.PortID(), ev); err != nil {
		t.Fatal(err)
	}
	if _, from := receive(t, b); from != (connector.Sender{}) {
		t.Errorf("kernel unicast arrived from %+v, want the kernel without group", from)
	}
	if err := k.Unicast(4242, ev); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Unicast to a missing port: %v, want ECONNREFUSED", err)
	}
	if _, err := k.Multicast(33, ev); !errors.Is(err, connector.ErrInvalidGroup) {
		t.Errorf("Multicast on group 33: %v, want ErrInvalidGroup", err)
	}
	if _, err := k.Multicast(1, connector.Message{Data: make([]byte, 70000)}); err == nil {
		t.Error("Multicast of a 70000-byte payload succeeded")
	}
}

func TestHandlerRepliesAndRequests(t *testing.T) {
	k := cntest.New(nil)
	id := connector.CBID{Idx: 3, Val: 1}
	k.Handle(id, func(req connector.Message, from connector.Sender) []cntest.Reply {
		r := req
		r.Ack = req.Seq + 1
		r.Data = append([]byte("re: "), req.Data...)
		return []cntest.Reply{{Message: r}, {Message: r, Group: 3}}
	})
	requester := dial(t, k, groups(3))
	listener := dial(t, k, groups(3))
	req := connector.Message{ID: id, Seq: 41, Ack: 5, Flags: 1, Data: []byte("ping")}
	if err := requester.Send(req); err != nil {
		t.Fatal(err)
	}
	// Replies are delivered before Send returns, as the kernel runs
	// callbacks in the sender's system call.
	if q := k.Queued(requester.PortID()); q != 2 {
		t.Fatalf("requester has %d datagrams queued after Send, want 2 (unicast and multicast reply)", q)
	}
	want := connector.Message{ID: id, Seq: 41, Ack: 42, Flags: 1, Data: []byte("re: ping")}
	msgs, from := receive(t, requester)
	if len(msgs) != 1 || !equalMsg(msgs[0], want) || from != (connector.Sender{}) {
		t.Errorf("unicast reply %+v from %+v, want %+v from the kernel", msgs, from, want)
	}
	msgs, from = receive(t, requester)
	if len(msgs) != 1 || !equalMsg(msgs[0], want) || from != (connector.Sender{Group: 3}) {
		t.Errorf("multicast reply %+v from %+v", msgs, from)
	}
	msgs, from = receive(t, listener)
	if len(msgs) != 1 || !equalMsg(msgs[0], want) || from != (connector.Sender{Group: 3}) {
		t.Errorf("listener got %+v from %+v", msgs, from)
	}

	reqs := k.Requests()
	if len(reqs) != 1 {
		t.Fatalf("Requests = %d, want 1", len(reqs))
	}
	r := reqs[0]
	if !equalMsg(r.Message, req) || !r.Handled || r.From != (connector.Sender{Port: requester.PortID()}) {
		t.Errorf("request = %+v", r)
	}
	// The Conn's encoder, checked by the fake's independent decoder.
	wantHdr := cntest.NetlinkHeader{Len: 16 + 20 + 4, Type: cntest.TypeDone, Seq: 41, PID: requester.PortID()}
	if r.Header != wantHdr {
		t.Errorf("netlink header as sent = %+v, want %+v", r.Header, wantHdr)
	}
	if len(r.Raw) != int(wantHdr.Len) {
		t.Errorf("datagram of %d bytes, want %d", len(r.Raw), wantHdr.Len)
	}

	// No handler: recorded, not answered, like the kernel's silent drop.
	k.Handle(id, nil)
	if err := requester.Send(req); err != nil {
		t.Fatal(err)
	}
	if reqs := k.Requests(); len(reqs) != 2 || reqs[1].Handled {
		t.Errorf("after unregistering: requests %+v, want a second, unhandled one", reqs)
	}
	if q := k.Queued(requester.PortID()); q != 0 {
		t.Errorf("unhandled request got %d replies", q)
	}
	if rej := k.Rejected(); len(rej) != 0 {
		t.Errorf("well-formed requests rejected: %+v", rej)
	}
}

func TestHandlerSeesMulticastToKernel(t *testing.T) {
	k := cntest.New(nil)
	var got []connector.Sender
	var mu sync.Mutex
	k.Handle(connector.IDProc, func(req connector.Message, from connector.Sender) []cntest.Reply {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, from)
		return nil
	})
	c := dial(t, k, nil)
	if err := c.Multicast(20, connector.Message{ID: connector.IDProc, Data: []byte{1, 0, 0, 0}}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != (connector.Sender{Port: c.PortID(), Group: 20}) {
		t.Errorf("handler saw %+v; a multicast with nl_pid 0 must also reach the kernel agent", got)
	}
}

// recordTB captures the errors that CheckRequest reports.
type recordTB struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (r *recordTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func TestCheckRequest(t *testing.T) {
	k := cntest.New(nil)
	rec := &recordTB{TB: t}
	id := connector.CBID{Idx: 14, Val: 0x456}
	want := connector.Message{ID: id, Data: []byte{1, 2}}
	called := 0
	k.Handle(id, cntest.CheckRequest(rec, want, func(req connector.Message, from connector.Sender) []cntest.Reply {
		called++
		return []cntest.Reply{{Message: req}}
	}))
	c := dial(t, k, nil)

	// Seq and Ack are not checked where want leaves them 0.
	if err := c.Send(connector.Message{ID: id, Seq: 99, Ack: 3, Data: []byte{1, 2}}); err != nil {
		t.Fatal(err)
	}
	if len(rec.errors) != 0 {
		t.Fatalf("matching request reported: %v", rec.errors)
	}
	if err := c.Send(connector.Message{ID: id, Flags: 4, Data: []byte{1, 3}}); err != nil {
		t.Fatal(err)
	}
	if len(rec.errors) != 1 || !strings.Contains(rec.errors[0], "flags: want 0x0, got 0x4") || !strings.Contains(rec.errors[0], "data: want 2 bytes 01 02, got 2 bytes 01 03") {
		t.Errorf("reported %q, want the flags and data differences", rec.errors)
	}
	if called != 2 || k.Queued(c.PortID()) != 2 {
		t.Errorf("next handler called %d times, %d replies queued; want 2 and 2", called, k.Queued(c.PortID()))
	}
}

func TestPermissions(t *testing.T) {
	k := cntest.New(nil)
	peer := dial(t, k, groups(20))
	if _, err := k.DialUnprivileged(groups(1, 2)); !errors.Is(err, os.ErrPermission) {
		t.Errorf("unprivileged Dial joining group 2: %v, want os.ErrPermission", err)
	}
	if len(k.Ports()) != 1 {
		t.Errorf("a failed Dial left a socket behind: ports %v", k.Ports())
	}
	c, err := k.DialUnprivileged(groups(1, 3, 27))
	if err != nil {
		t.Fatalf("unprivileged Dial joining odd groups: %v", err)
	}
	defer c.Close()
	if err := c.JoinGroup(20); !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Errorf("unprivileged JoinGroup(20) = %v, want os.ErrPermission naming CAP_NET_ADMIN", err)
	}
	if err := c.SendTo(peer.PortID(), msg(20, 0, "")); !errors.Is(err, os.ErrPermission) {
		t.Errorf("unprivileged SendTo = %v, want os.ErrPermission", err)
	}
	if err := c.Multicast(20, msg(20, 0, "")); !errors.Is(err, os.ErrPermission) {
		t.Errorf("unprivileged Multicast = %v, want os.ErrPermission", err)
	}
	if k.Queued(peer.PortID()) != 0 {
		t.Error("a refused send was delivered")
	}
	if err := c.Send(msg(1, 0, "")); err != nil {
		t.Errorf("unprivileged Send to the kernel = %v, want success", err)
	}
	gs, err := c.Groups()
	if err != nil || len(gs) != 3 || gs[0] != 1 || gs[1] != 3 || gs[2] != 27 {
		t.Errorf("Groups = %v, %v; want [1 3 27]", gs, err)
	}
}

func TestNotInitialNetNS(t *testing.T) {
	k := cntest.New(&cntest.Options{NotInitialNetNS: true})
	called := false
	k.Handle(connector.IDProc, func(connector.Message, connector.Sender) []cntest.Reply { called = true; return nil })
	c, peer := dial(t, k, nil), dial(t, k, groups(20))
	if err := c.Send(connector.Message{ID: connector.IDProc}); !errors.Is(err, connector.ErrNotInitialNetNS) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Send = %v, want ErrNotInitialNetNS wrapping ECONNREFUSED", err)
	}
	err := c.Multicast(20, msg(20, 0, "x"))
	if !errors.Is(err, connector.ErrNotInitialNetNS) {
		t.Errorf("Multicast = %v, want ErrNotInitialNetNS", err)
	}
	if k.Queued(peer.PortID()) != 1 {
		t.Error("the multicast did not reach the group before the kernel refused it")
	}
	if err := c.SendTo(peer.PortID(), msg(20, 0, "y")); err != nil {
		t.Errorf("SendTo a peer in the same namespace = %v", err)
	}
	if called {
		t.Error("a handler ran outside the initial network namespace")
	}
}

func TestDialConfigErrors(t *testing.T) {
	k := cntest.New(nil)
	if _, err := k.Dial(groups(33)); !errors.Is(err, connector.ErrInvalidGroup) {
		t.Errorf("Dial with group 33: %v, want ErrInvalidGroup", err)
	}
	if _, err := k.Dial(&connector.Config{NetNS: 5}); !errors.Is(err, connector.ErrNotSupported) {
		t.Errorf("Dial with NetNS: %v, want ErrNotSupported", err)
	}
	if n := len(k.Ports()); n != 0 {
		t.Errorf("failed Dials left %d sockets", n)
	}
}

func TestQueueOverflowAndCongestion(t *testing.T) {
	k := cntest.New(&cntest.Options{QueueLen: 4})
	c := dial(t, k, groups(1))
	for i := range 6 {
		if _, err := k.Multicast(1, msg(1, uint32(i), "")); err != nil {
			t.Fatal(err)
		}
	}
	if q, d := k.Queued(c.PortID()), k.Drops(c.PortID()); q != 4 || d != 2 {
		t.Fatalf("queued %d, dropped %d; want 4 and 2", q, d)
	}
	// ENOBUFS comes first, once, before the queued messages.
	if err := receiveErr(t, c); !errors.Is(err, connector.ErrOverrun) || !errors.Is(err, syscall.ENOBUFS) {
		t.Fatalf("first receive after the overflow: %v, want ErrOverrun", err)
	}
	msgs, _ := receive(t, c)
	if msgs[0].Seq != 0 {
		t.Errorf("first queued message has seq %d, want 0", msgs[0].Seq)
	}
	// Still congested: new messages are dropped until the queue is empty,
	// and no second ENOBUFS is reported for them.
	if n, _ := k.Multicast(1, msg(1, 100, "")); n != 0 {
		t.Errorf("a multicast was queued on a congested socket")
	}
	for i := 1; i < 4; i++ {
		msgs, _ := receive(t, c)
		if msgs[0].Seq != uint32(i) {
			t.Errorf("message %d has seq %d", i, msgs[0].Seq)
		}
	}
	if n, _ := k.Multicast(1, msg(1, 200, "")); n != 1 {
		t.Fatal("after draining the queue a multicast was not queued")
	}
	if msgs, _ := receive(t, c); msgs[0].Seq != 200 {
		t.Errorf("got seq %d, want 200", msgs[0].Seq)
	}
	if s := c.Stats(); s.Overruns != 1 || s.Messages != 5 {
		t.Errorf("Stats = %+v, want 1 overrun and 5 messages", s)
	}
	if d := k.Drops(c.PortID()); d != 3 {
		t.Errorf("Drops = %d, want 3", d)
	}
	// The Conn reads the same counter, as it reads sk_drops on the kernel.
	if d, err := c.Drops(); d != 3 || err != nil {
		t.Errorf("Conn.Drops = %d, %v; want 3", d, err)
	}
	c.Close()
	if _, err := c.Drops(); !errors.Is(err, connector.ErrClosed) {
		t.Errorf("Conn.Drops after Close: %v, want ErrClosed", err)
	}
}

func TestNoENOBUFS(t *testing.T) {
	k := cntest.New(&cntest.Options{QueueLen: 2})
	c := dial(t, k, &connector.Config{Groups: []connector.Group{1}, NoENOBUFS: true})
	for i := range 3 {
		_, _ = k.Multicast(1, msg(1, uint32(i), ""))
	}
	if msgs, _ := receive(t, c); msgs[0].Seq != 0 {
		t.Fatalf("with NoENOBUFS the first receive returned seq %d, want 0 and no error", msgs[0].Seq)
	}
	// Not congested: as soon as there is room, delivery resumes.
	if n, _ := k.Multicast(1, msg(1, 3, "")); n != 1 {
		t.Error("with room in the queue a multicast was dropped")
	}
	for _, want := range []uint32{1, 3} {
		if msgs, _ := receive(t, c); msgs[0].Seq != want {
			t.Errorf("got seq %d, want %d", msgs[0].Seq, want)
		}
	}
	if d, s := k.Drops(c.PortID()), c.Stats(); d != 1 || s.Overruns != 0 {
		t.Errorf("drops %d, overruns %d; want 1 and 0", d, s.Overruns)
	}
	if d, err := c.Drops(); d != 1 || err != nil {
		t.Errorf("Conn.Drops = %d, %v; want 1: drops are counted with NoENOBUFS too", d, err)
	}
}

// TestNoENOBUFSReadBack: Conn.NoENOBUFS on a fake socket returns what
// Config.NoENOBUFS or SetNoENOBUFS set, as getsockopt does on the kernel,
// and ErrClosed after Close.
func TestNoENOBUFSReadBack(t *testing.T) {
	k := cntest.New(nil)
	c := dial(t, k, groups(1))
	if on, err := c.NoENOBUFS(); on || err != nil {
		t.Errorf("NoENOBUFS() after Dial = %v, %v; want false, nil", on, err)
	}
	for _, want := range []bool{true, false} {
		if err := c.SetNoENOBUFS(want); err != nil {
			t.Fatal(err)
		}
		if on, err := c.NoENOBUFS(); on != want || err != nil {
			t.Errorf("NoENOBUFS() = %v, %v; want %v, nil", on, err, want)
		}
	}
	d := dial(t, k, &connector.Config{Groups: []connector.Group{1}, NoENOBUFS: true})
	if on, err := d.NoENOBUFS(); !on || err != nil {
		t.Errorf("NoENOBUFS() after Dial with Config.NoENOBUFS = %v, %v; want true, nil", on, err)
	}
	d.Close()
	if _, err := d.NoENOBUFS(); !errors.Is(err, connector.ErrClosed) {
		t.Errorf("NoENOBUFS after Close: %v; want ErrClosed", err)
	}
}

func TestInjectedOverrun(t *testing.T) {
	k := cntest.New(nil)
	c := dial(t, k, groups(1))
	_, _ = k.Multicast(1, msg(1, 1, ""))
	if err := k.Overrun(c.PortID()); err != nil {
		t.Fatal(err)
	}
	r := c.NewReader()
	defer r.Release()
	_ = c.SetReadDeadline(time.Now().Add(wait))
	if _, _, err := r.Next(); !errors.Is(err, connector.ErrOverrun) {
		t.Fatalf("Next after Overrun: %v, want ErrOverrun", err)
	}
	if m, _, err := r.Next(); err != nil || m.Seq != 1 {
		t.Fatalf("Next after the overrun: %+v, %v; want the queued message", m, err)
	}
	if err := k.Overrun(999); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Overrun of a missing port: %v", err)
	}
}

func TestUserspaceUnicastWaitsForRoom(t *testing.T) {
	k := cntest.New(&cntest.Options{QueueLen: 1})
	a, b := dial(t, k, nil), dial(t, k, nil)
	if err := a.SendTo(b.PortID(), msg(20, 1, "")); err != nil {
		t.Fatal(err)
	}
	// The receiver is full: the sender waits, and gives up at its deadline,
	// without an overrun at the receiver.
	_ = a.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	if err := a.SendTo(b.PortID(), msg(20, 2, "")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("SendTo a full receiver: %v, want os.ErrDeadlineExceeded", err)
	}
	if d := k.Drops(b.PortID()); d != 0 {
		t.Errorf("userspace unicast into a full queue counted %d drops; it must wait instead", d)
	}
	if d, err := b.Drops(); d != 0 || err != nil {
		t.Errorf("Conn.Drops = %d, %v; a refused unicast is not a drop", d, err)
	}
	_ = a.SetWriteDeadline(time.Now().Add(wait))
	done := make(chan error, 1)
	go func() { done <- a.SendTo(b.PortID(), msg(20, 3, "")) }()
	for _, want := range []uint32{1, 3} {
		msgs, _ := receive(t, b)
		if msgs[0].Seq != want {
			t.Errorf("got seq %d, want %d", msgs[0].Seq, want)
		}
	}
	if err := <-done; err != nil {
		t.Errorf("SendTo once there was room: %v", err)
	}
}

func TestReadBufferSetsQueueLength(t *testing.T) {
	k := cntest.New(nil)
	each := k.TrueSize(36, false) // msg(1, i, "") is a 36-byte datagram
	c := dial(t, k, &connector.Config{Groups: []connector.Group{1}, ReadBufferSize: 5 * each / 2})
	n, err := c.ReadBuffer()
	if err != nil || n != 5*each {
		t.Fatalf("ReadBuffer = %d, %v; want %d (the kernel doubles the request)", n, err, 5*each)
	}
	for i := range 6 {
		_, _ = k.Multicast(1, msg(1, uint32(i), ""))
	}
	if q := k.Queued(c.PortID()); q != 5 {
		t.Errorf("queued %d, want 5 (%d bytes per datagram)", q, each)
	}

	u, err := k.DialUnprivileged(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if err := u.SetReadBuffer(64 << 20); err != nil {
		t.Fatal(err)
	}
	if n, _ := u.ReadBuffer(); n != 2*cntest.DefaultMemMax {
		t.Errorf("unprivileged ReadBuffer after asking for 64 MiB = %d, want %d (2 x the default rmem_max)", n, 2*cntest.DefaultMemMax)
	}
	k4 := cntest.New(&cntest.Options{RmemMax: 4194304})
	u4, err := k4.DialUnprivileged(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer u4.Close()
	if err := u4.SetReadBuffer(64 << 20); err != nil {
		t.Fatal(err)
	}
	if n, _ := u4.ReadBuffer(); n != 8388608 {
		t.Errorf("unprivileged ReadBuffer with rmem_max 4194304 after asking for 64 MiB = %d, want 8388608 (2 x rmem_max)", n)
	}
	if err := c.SetReadBuffer(64 << 20); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.ReadBuffer(); n != 128<<20 {
		t.Errorf("privileged ReadBuffer after asking for 64 MiB = %d, want %d (forced)", n, 128<<20)
	}
	if err := c.SetReadBuffer(1); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.ReadBuffer(); n != 2304 {
		t.Errorf("ReadBuffer after asking for 1 byte = %d, want the minimum 2304", n)
	}
	if err := c.SetWriteBuffer(1000); err != nil {
		t.Fatal(err)
	}
	if n, err := c.WriteBuffer(); err != nil || n != 4608 {
		t.Errorf("WriteBuffer = %d, %v, want the minimum 4608", n, err)
	}
}

func TestTruncation(t *testing.T) {
	k := cntest.New(nil)
	c := dial(t, k, &connector.Config{Groups: []connector.Group{1}, MessageBufferSize: 64})
	_, _ = k.Multicast(1, msg(1, 1, strings.Repeat("x", 100)), msg(1, 2, "fits"))
	err := receiveErr(t, c)
	if !errors.Is(err, connector.ErrTruncated) || !strings.Contains(err.Error(), "136 bytes") {
		t.Fatalf("receive of a 136-byte datagram into 64 bytes: %v, want ErrTruncated naming the size", err)
	}
	msgs, _ := receive(t, c)
	if len(msgs) != 1 || string(msgs[0].Data) != "fits" {
		t.Errorf("after the truncated datagram got %+v", msgs)
	}
}

func TestCloseUnblocksAndRemovesSocket(t *testing.T) {
	k := cntest.New(nil)
	c, err := k.Dial(groups(1))
	if err != nil {
		t.Fatal(err)
	}
	port := c.PortID()
	done := make(chan error, 1)
	go func() {
		r := c.NewReader()
		defer r.Release()
		_, _, err := r.Next()
		done <- err
	}()
	if !k.WaitReceiving(port, wait) {
		t.Fatal("the reader never blocked")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, connector.ErrClosed) {
			t.Errorf("Next after Close = %v, want ErrClosed", err)
		}
	case <-time.After(wait):
		t.Fatal("Close did not unblock Next")
	}
	if len(k.Ports()) != 0 || len(k.Members(1)) != 0 {
		t.Errorf("closed socket still listed: ports %v, members %v", k.Ports(), k.Members(1))
	}
	if err := k.Unicast(port, msg(1, 0, "")); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Unicast to a closed socket: %v, want ECONNREFUSED", err)
	}
}

func TestReadDeadline(t *testing.T) {
	k := cntest.New(nil)
	c := dial(t, k, nil)

	// A deadline in the past fails at once, even with data queued, as the
	// runtime poller does.
	_ = k.Unicast(c.PortID(), msg(1, 0, ""))
	_ = c.SetReadDeadline(time.Now().Add(-time.Second))
	_, _, err := c.Receive()
	var oe *connector.OpError
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &oe) || !oe.Timeout() {
		t.Fatalf("Receive past the deadline: %v, want a timeout matching os.ErrDeadlineExceeded", err)
	}

	// A short deadline expires while waiting.
	_ = c.SetReadDeadline(time.Time{})
	_, _, _ = c.Receive() // the queued message
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(30 * time.Millisecond))
	if _, _, err := c.Receive(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Receive with nothing queued: %v, want os.ErrDeadlineExceeded", err)
	}
	if d := time.Since(start); d < 30*time.Millisecond || d > wait {
		t.Errorf("deadline fired after %v, want about 30ms", d)
	}

	// Moving the deadline into the past wakes a waiting receive.
	_ = c.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() { _, _, err := c.Receive(); done <- err }()
	if !k.WaitReceiving(c.PortID(), wait) {
		t.Fatal("Receive never blocked")
	}
	_ = c.SetReadDeadline(time.Now().Add(-time.Second))
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("waiting Receive after the deadline moved: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("changing the deadline did not wake the waiting Receive")
	}
}

func TestWaitReceivingTimesOut(t *testing.T) {
	k := cntest.New(nil)
	c := dial(t, k, nil)
	if k.WaitReceiving(c.PortID(), 10*time.Millisecond) {
		t.Error("WaitReceiving reported a receive that nobody started")
	}
}

func TestInjectRaw(t *testing.T) {
	k := cntest.New(&cntest.Options{QueueLen: 1})
	c := dial(t, k, &connector.Config{Senders: connector.SendersAny})
	d := cntest.MustDatagram(msg(1, 5, "spoof"))
	spoof := connector.Sender{Port: 4321, Group: 1}
	if err := k.InjectRaw(c.PortID(), spoof, d); err != nil {
		t.Fatal(err)
	}
	// Full: a userspace unicast is refused, anything else is an overrun.
	if err := k.InjectRaw(c.PortID(), connector.Sender{Port: 4321}, d); !errors.Is(err, syscall.EAGAIN) {
		t.Errorf("userspace unicast into a full queue: %v, want EAGAIN", err)
	}
	if err := k.InjectRaw(c.PortID(), connector.Sender{}, d); !errors.Is(err, syscall.ENOBUFS) {
		t.Errorf("kernel message into a full queue: %v, want ENOBUFS", err)
	}
	if err := k.InjectRaw(c.PortID(), connector.Sender{Group: 40}, d); !errors.Is(err, connector.ErrInvalidGroup) {
		t.Errorf("sender group 40: %v, want ErrInvalidGroup", err)
	}
	if err := receiveErr(t, c); !errors.Is(err, connector.ErrOverrun) {
		t.Errorf("first receive: %v, want ErrOverrun", err)
	}
	msgs, from := receive(t, c)
	if from != spoof || len(msgs) != 1 || string(msgs[0].Data) != "spoof" {
		t.Errorf("received %+v from %+v", msgs, from)
	}
}

func TestConcurrentUse(t *testing.T) {
	testutil.CheckGoroutines(t, wait)
	k := cntest.New(&cntest.Options{QueueLen: 10000})
	k.Handle(connector.CBID{Idx: 25, Val: 1}, func(req connector.Message, from connector.Sender) []cntest.Reply {
		return []cntest.Reply{{Message: req}}
	})
	const senders, each = 4, 200
	rx := dial(t, k, groups(25))
	var wg sync.WaitGroup
	for i := range senders {
		c := dial(t, k, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				m := msg(25, uint32(i*each+j), "")
				var err error
				if j%2 == 0 {
					err = c.Multicast(25, m)
				} else {
					err = c.SendTo(rx.PortID(), m)
				}
				if err != nil {
					t.Error(err)
					return
				}
				if err := c.Send(m); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// Two readers share the receiving Conn.
	var mu sync.Mutex
	seen := make(map[uint32]bool)
	var rwg sync.WaitGroup
	for range 2 {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			r := rx.NewReader()
			defer r.Release()
			for {
				m, _, err := r.Next()
				if err != nil {
					if !errors.Is(err, connector.ErrClosed) {
						t.Error(err)
					}
					return
				}
				mu.Lock()
				if seen[m.Seq] {
					t.Errorf("seq %d received twice", m.Seq)
				}
				seen[m.Seq] = true
				n := len(seen)
				mu.Unlock()
				if n == senders*each {
					_ = rx.Close()
				}
			}
		}()
	}
	wg.Wait()
	done := make(chan struct{})
	go func() { rwg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		_ = rx.Close()
		<-done
		t.Fatalf("received %d of %d messages", len(seen), senders*each)
	}
	// Every Send, and every multicast (which the kernel also gets).
	if n, want := len(k.Requests()), senders*each+senders*each/2; n != want {
		t.Errorf("kernel got %d requests, want %d", n, want)
	}
}

func TestReplyFilter(t *testing.T) {
	k := cntest.New(nil)
	a, b := dial(t, k, groups(1)), dial(t, k, groups(1))
	var asked []uint32
	k.Handle(connector.IDProc, func(req connector.Message, from connector.Sender) []cntest.Reply {
		// Deliver to everyone but the requester, asking the filter per
		// member.
		return []cntest.Reply{{Message: req, Group: 1, Filter: func(port uint32) bool {
			asked = append(asked, port)
			_ = k.Queued(port) // the Kernel may be used from a filter
			return port != from.Port
		}}}
	})
	if err := a.Send(connector.Message{ID: connector.IDProc, Seq: 3}); err != nil {
		t.Fatal(err)
	}
	if len(asked) != 2 {
		t.Errorf("filter asked for ports %v, want both members", asked)
	}
	if k.Queued(a.PortID()) != 0 {
		t.Error("the filter excluded the requester, but it got the reply")
	}
	msgs, from := receive(t, b)
	if len(msgs) != 1 || msgs[0].Seq != 3 || from != (connector.Sender{Group: 1}) {
		t.Errorf("member got %+v from %+v", msgs, from)
	}
}

func TestRequestsKeepsTheLast4096(t *testing.T) {
	k := cntest.New(nil)
	c := dial(t, k, nil)
	const n = 3*4096 + 5
	for i := range n {
		if err := c.Send(connector.Message{ID: connector.IDProc, Seq: uint32(i)}); err != nil {
			t.Fatal(err)
		}
	}
	reqs := k.Requests()
	if len(reqs) != 4096 {
		t.Fatalf("Requests holds %d, want 4096", len(reqs))
	}
	for i, r := range reqs {
		if want := uint32(n - 4096 + i); r.Message.Seq != want {
			t.Fatalf("request %d has seq %d, want %d (oldest first)", i, r.Message.Seq, want)
		}
	}
}

// TestReplyErrors: a handler's reply that cannot be sent is recorded, not
// lost without a trace; a valid reply next to it is delivered.
func TestReplyErrors(t *testing.T) {
	k := cntest.New(nil)
	id := connector.CBID{Idx: 0x7e57, Val: 1}
	k.Handle(id, func(req connector.Message, _ connector.Sender) []cntest.Reply {
		return []cntest.Reply{
			{Message: connector.Message{ID: id, Data: make([]byte, 70000)}},
			{Message: connector.Message{ID: id}, Group: 40},
			{Message: connector.Message{ID: id, Seq: 9}},
		}
	})
	c := dial(t, k, nil)
	if err := c.Send(connector.Message{ID: id}); err != nil {
		t.Fatal(err)
	}
	msgs, _ := receive(t, c)
	if len(msgs) != 1 || msgs[0].Seq != 9 {
		t.Fatalf("got %+v, want the valid reply", msgs)
	}
	errs := k.ReplyErrors()
	if len(errs) != 2 || !strings.Contains(errs[0].Error(), "65535") || !errors.Is(errs[1], connector.ErrInvalidGroup) {
		t.Errorf("ReplyErrors = %v, want the oversized payload and the bad group", errs)
	}
}

// TestTrueSize checks the fake's charges against what the kernels charged
// (Rmem in /proc/net/netlink, and how many datagrams filled a 131072-byte
// buffer: TestIntegrationTrueSizeMatchesKernel in the kernel matrix, and on
// a 6.18 host whose small-head cache is 576 bytes).
func TestTrueSize(t *testing.T) {
	for _, tc := range []struct {
		opts        cntest.Options
		n           int
		userUnicast bool
		want        int
	}{
		{cntest.Options{Release: "6.1.0-40-amd64"}, 36, false, 768},
		{cntest.Options{Release: "6.1"}, 76, true, 768},
		{cntest.Options{Release: "6.1"}, 257, false, 1280},
		{cntest.Options{Release: "6.12.118+deb13-amd64"}, 76, false, 960},
		{cntest.Options{}, 76, false, 960},
		{cntest.Options{}, 384, false, 960},
		{cntest.Options{}, 385, false, 1280},
		{cntest.Options{SmallHeadCache: 576}, 256, false, 832},
		{cntest.Options{SmallHeadCache: 576}, 257, true, 1280},
		{cntest.Options{}, 1536, false, 2304},
		{cntest.Options{}, 3776, true, 4352},
		{cntest.Options{}, 3777, true, 4416}, // vmalloc'ed head
		{cntest.Options{}, 3777, false, 8448},
		{cntest.Options{}, 16036, false, 16640},
		{cntest.Options{}, 16036, true, 16640},
	} {
		if got := cntest.New(&tc.opts).TrueSize(tc.n, tc.userUnicast); got != tc.want {
			t.Errorf("%+v: TrueSize(%d, %v) = %d, want %d", tc.opts, tc.n, tc.userUnicast, got, tc.want)
		}
	}
}

// TestChargesFillBuffer: datagrams are charged their truesize, and one is
// queued when the queue is empty, even if larger than the whole buffer, or
// when the charges stay within the buffer.
func TestChargesFillBuffer(t *testing.T) {
	k := cntest.New(nil)
	c := dial(t, k, &connector.Config{Groups: []connector.Group{1}})
	if err := c.SetReadBuffer(1); err != nil { // the minimum, 2304 bytes
		t.Fatal(err)
	}
	big := string(make([]byte, 4000)) // a 4036-byte datagram, charged 8448
	for i := range 3 {
		_, _ = k.Multicast(1, msg(1, uint32(i), big))
	}
	if q := k.Queued(c.PortID()); q != 1 {
		t.Errorf("queued %d datagrams charged 8448 bytes in a 2304-byte buffer, want 1 (an empty queue takes any)", q)
	}
	d := dial(t, k, &connector.Config{Groups: []connector.Group{1}})
	if err := d.SetReadBuffer(2 * 960 / 2); err != nil { // room for two small datagrams
		t.Fatal(err)
	}
	if n, _ := d.ReadBuffer(); n != 2304 {
		t.Fatalf("ReadBuffer = %d, want the minimum 2304", n)
	}
	for i := range 4 {
		_, _ = k.Multicast(1, msg(1, uint32(i), ""))
	}
	if q := k.Queued(d.PortID()); q != 2 {
		t.Errorf("queued %d datagrams charged 960 bytes in a 2304-byte buffer, want 2", q)
	}
}

// TestZeroKernel: a Kernel that New did not make says so (Dial's error,
// Handle's panic) instead of panicking on a nil map.
func TestZeroKernel(t *testing.T) {
	for _, k := range []*cntest.Kernel{{}, nil} {
		for _, dial := range []testutil.DialFunc{k.Dial, k.DialUnprivileged} {
			c, err := dial(nil)
			if err == nil || !strings.Contains(err.Error(), "cntest.New") {
				t.Errorf("Dial on a zero Kernel: %v, %v; want an error saying to use cntest.New", c, err)
			}
		}
	}
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "cntest.New") {
			t.Errorf("Handle on a zero Kernel: recovered %v, want a panic saying to use cntest.New", r)
		}
	}()
	new(cntest.Kernel).Handle(connector.IDProc, nil)
}
