//go:build linux

package cntest_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/testutil"
	"golang.org/x/sys/unix"
)

// These tests hold the fake to the real kernel: they run the same thing
// against both and compare.

// TestIntegrationDatagramMatchesKernel checks that the fake builds datagrams
// byte for byte as the kernel does, using the process events connector's
// ack to a LISTEN request, read from a raw socket (not through package
// connector).
func TestIntegrationDatagramMatchesKernel(t *testing.T) {
	testutil.RequireProcEvents(t)
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, connector.Protocol)
	if err != nil {
		t.Fatal(err)
	}
	// Closed after the IGNOREs that ProcListenAck sends at cleanup.
	t.Cleanup(func() { unix.Close(fd) })
	// Group 1 must be joined before LISTEN; that needs CAP_NET_ADMIN before
	// Linux 6.6.
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); errors.Is(err, unix.EPERM) {
		testutil.RequireCapability(t, unix.CAP_NET_ADMIN, "CAP_NET_ADMIN")
		t.Fatalf("bind to group 1 with CAP_NET_ADMIN: %v", err)
	} else if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000}); err != nil {
		t.Fatal(err)
	}
	request := func(op, ack uint32) error {
		data := binary.NativeEndian.AppendUint32(nil, op) // enum proc_cn_mcast_op
		d := cntest.MustDatagram(connector.Message{ID: connector.IDProc, Ack: ack, Data: data})
		return unix.Sendto(fd, d, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	}
	buf := make([]byte, 1<<16)
	var overruns atomic.Uint64
	// The wait survives receive overruns (other traffic on group 1): see
	// testutil.ProcListenAck.
	testutil.ProcListenAck(t, testutil.ProcListen{
		Try: func(ctx context.Context, p testutil.ProcTry) (bool, error) {
			// After an overrun the kernel drops everything until the
			// queue has been read empty: read it empty first.
			for p.Retry {
				_, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
				if errors.Is(err, unix.EAGAIN) {
					break
				}
				if errors.Is(err, unix.ENOBUFS) {
					overruns.Add(1)
				} else if err != nil && !errors.Is(err, unix.EINTR) {
					return false, err
				}
			}
			if err := request(1, p.Ack); err != nil { // PROC_CN_MCAST_LISTEN
				t.Fatalf("sending PROC_CN_MCAST_LISTEN: %v", err)
			}
			for ctx.Err() == nil {
				n, from, err := unix.Recvfrom(fd, buf, 0)
				if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
					continue
				}
				if errors.Is(err, unix.ENOBUFS) {
					overruns.Add(1)
					return true, err
				}
				if err != nil {
					t.Fatal(err)
				}
				real := buf[:n]
				if n < 56 || !p.Ours(binary.NativeEndian.Uint32(real[28:])) || binary.NativeEndian.Uint32(real[36:]) != 0 {
					continue // an event, or someone else's ack
				}
				sa := from.(*unix.SockaddrNetlink)
				if sa.Pid != 0 || sa.Groups != 1 {
					t.Errorf("ack came from port %d groups %#x; the fake says port 0, groups 0x1", sa.Pid, sa.Groups)
				}
				m := cnMessage(binary.NativeEndian, real)
				if fake := cntest.MustDatagram(m); !bytes.Equal(fake, real) {
					t.Fatalf("the fake's datagram differs from the kernel's:\nfake   % x\nkernel % x", fake, real)
				}
				return true, nil
			}
			return true, ctx.Err()
		},
		Overruns: overruns.Load,
		Ignore:   func() error { return request(2, rand.Uint32()) }, // PROC_CN_MCAST_IGNORE
		Wait:     wait,
	})
}

// TestIntegrationFakeMatchesKernel runs one scenario of userspace unicast
// and multicast on real sockets and on the fake, and compares what each
// socket received and from whom.
func TestIntegrationFakeMatchesKernel(t *testing.T) {
	testutil.RequireInitialNetNS(t)
	testutil.RequireCapability(t, unix.CAP_NET_ADMIN, "CAP_NET_ADMIN")
	// Group 29 is this test's own; other tests may use it at the same time,
	// so only messages from the scenario's own ports are considered.
	const g = connector.Group(29)
	k := cntest.New(nil)
	real := scenario(t, g, connector.Dial)
	fake := scenario(t, g, k.Dial)
	if real != fake {
		t.Fatalf("the fake and the kernel disagree:\nkernel:\n%s\nfake:\n%s", real, fake)
	}
	t.Logf("transcript:\n%s", real)
}

// scenario sends between three sockets and returns a transcript of what
// arrived, with port ids replaced by the sockets' names. Absence is checked
// without waiting: a marker unicast after the message under test must be the
// next thing to arrive, because the kernel queues synchronously in sendmsg.
func scenario(t *testing.T, g connector.Group, dial testutil.DialFunc) string {
	t.Helper()
	open := func(gs ...connector.Group) *connector.Conn {
		return testutil.Dial(t, dial, &connector.Config{Groups: gs})
	}
	a, b, c := open(g), open(g), open()
	names := map[uint32]string{0: "kernel", a.PortID(): "a", b.PortID(): "b", c.PortID(): "c"}
	var out strings.Builder
	// next records the next message to c from one of the scenario's sockets.
	next := func(name string, rx *connector.Conn) {
		t.Helper()
		_ = rx.SetReadDeadline(time.Now().Add(wait))
		for {
			msgs, from, err := rx.Receive()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			who, ok := names[from.Port]
			if !ok || from.Port == 0 {
				continue // another test's traffic on the same group
			}
			for _, m := range msgs {
				fmt.Fprintf(&out, "%s <- %s group %d: %d:%d seq %d ack %d flags %d %q\n", name, who, from.Group, m.ID.Idx, m.ID.Val, m.Seq, m.Ack, m.Flags, m.Data)
			}
			return
		}
	}
	id := connector.CBID{Idx: uint32(g), Val: 0x7e57}
	send := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// A multicast reaches the other member, not the sender.
	send(a.Multicast(g, connector.Message{ID: id, Seq: 1, Ack: 2, Flags: 3, Data: []byte("to the group")}))
	send(c.SendTo(a.PortID(), connector.Message{ID: id, Seq: 2, Data: []byte("marker for a")}))
	next("b", b)
	next("a", a)
	// Unicast, with an odd-length payload.
	send(c.SendTo(b.PortID(), connector.Message{ID: id, Seq: 3, Data: []byte("odd")}))
	next("b", b)
	// After leaving the group, b gets no multicast.
	send(b.LeaveGroup(g))
	send(a.Multicast(g, connector.Message{ID: id, Seq: 4, Data: []byte("b left")}))
	send(c.SendTo(b.PortID(), connector.Message{ID: id, Seq: 5, Data: []byte("marker for b")}))
	next("b", b)
	// c joins and hears a's multicast.
	send(c.JoinGroup(g))
	send(a.Multicast(g, connector.Message{ID: id, Seq: 6}))
	next("c", c)
	gs, err := c.Groups()
	send(err)
	fmt.Fprintf(&out, "c groups %v\n", gs)
	return out.String()
}

// TestIntegrationOverrunMatchesKernel floods a socket with the smallest
// receive buffer, on real sockets and on the fake, and compares what the
// receiver sees: ENOBUFS before the queued messages, new messages dropped
// while the queue has not been read empty (congestion), delivery again
// after that. How many fit is TestIntegrationTrueSizeMatchesKernel's.
func TestIntegrationOverrunMatchesKernel(t *testing.T) {
	testutil.RequireInitialNetNS(t)
	testutil.RequireCapability(t, unix.CAP_NET_ADMIN, "CAP_NET_ADMIN")
	realEmpty := func(c *connector.Conn) bool { return queueEmpty(t, c) }
	k := cntest.New(nil)
	fakeEmpty := func(c *connector.Conn) bool { return k.Queued(c.PortID()) == 0 }

	real := alone(t, func(g connector.Group) (string, int) {
		return overrunScenario(t, g, connector.Dial, realEmpty)
	})
	fake, _ := overrunScenario(t, 31, k.Dial, fakeEmpty)
	if real != fake {
		t.Fatalf("the fake and the kernel disagree:\nkernel:\n%s\nfake:\n%s", real, fake)
	}
	t.Logf("transcript:\n%s", real)
}

// alone runs measure, which multicasts on group g and counts the
// datagrams from other senders that reached its receiver, on a group no
// other socket has joined (testutil.QuietGroup), and again on another if
// anything else arrived: other processes' datagrams take room in the
// receive buffer and change what fits. It fails the test after 5 tries.
func alone[T any](t *testing.T, measure func(g connector.Group) (result T, foreign int)) T {
	t.Helper()
	const tries = 5
	for try := 1; ; try++ {
		g := testutil.QuietGroup(t)
		v, foreign := measure(g)
		if foreign == 0 {
			return v
		}
		if try == tries {
			t.Fatalf("%d tries: each time, other senders' datagrams (%d the last time, on group %d) reached the receiver and took room in its buffer", tries, foreign, g)
		}
		t.Logf("try %d: %d datagrams from other senders on group %d took room in the receive buffer; measuring again", try, foreign, g)
	}
}

// overrunScenario returns the transcript, and how many datagrams from
// other senders the receiver got meanwhile.
func overrunScenario(t *testing.T, g connector.Group, dial testutil.DialFunc, empty func(*connector.Conn) bool) (transcript string, foreign int) {
	t.Helper()
	rx, tx := testutil.Pair(t, dial, &connector.Config{Groups: []connector.Group{g}})
	defer rx.Close() // now: the test measures again on other quiet groups
	defer tx.Close()
	if err := rx.SetReadBuffer(0); err != nil { // the minimum, 2304 bytes
		t.Fatal(err)
	}
	_ = rx.SetReadDeadline(time.Now().Add(wait))
	id := connector.CBID{Idx: uint32(g), Val: 0x0f10}
	multicast := func(seq uint32) {
		t.Helper()
		if err := tx.Multicast(g, connector.Message{ID: id, Seq: seq, Data: make([]byte, 40)}); err != nil {
			t.Fatal(err)
		}
	}
	// receive returns the next message from tx, or an error.
	receive := func() (uint32, error) {
		t.Helper()
		for {
			msgs, from, err := rx.Receive()
			if err != nil {
				return 0, err
			}
			if from.Port == tx.PortID() && len(msgs) == 1 && msgs[0].ID == id {
				return msgs[0].Seq, nil
			}
			foreign++
		}
	}
	var out strings.Builder
	for seq := range uint32(64) {
		multicast(seq)
	}
	_, err := receive()
	fmt.Fprintf(&out, "first receive: overrun %v\n", errors.Is(err, connector.ErrOverrun))
	first, err := receive()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&out, "then seq %d\n", first)
	if empty(rx) {
		t.Fatal("only one message fitted in the smallest buffer; the scenario needs two")
	}
	multicast(1000) // while congested
	var seqs []uint32
	for !empty(rx) {
		seq, err := receive()
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	contiguous := true
	for i, s := range seqs {
		contiguous = contiguous && s == first+1+uint32(i)
	}
	fmt.Fprintf(&out, "drained in order: %v, no message sent while congested: %v\n", contiguous, !contains(seqs, 1000))
	multicast(2000)
	seq, err := receive()
	fmt.Fprintf(&out, "after draining: seq %d, %v\n", seq, err)
	fmt.Fprintf(&out, "empty at the end: %v\n", empty(rx))
	return out.String(), foreign
}

func contains(s []uint32, v uint32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestIntegrationBufferSizesMatchKernel sets receive and send buffer sizes
// on real sockets and on the fake, privileged (SO_*BUFFORCE, through
// connector.Dial) and unprivileged (plain SO_*BUF on a raw socket, which is
// what a process without CAP_NET_ADMIN gets, against DialUnprivileged with
// this machine's rmem_max and wmem_max), and expects the sizes the kernel
// reports: doubled, floored, capped at INT_MAX/2 doubled. Sizes that do not
// fit the kernel's int are refused by both alike.
func TestIntegrationBufferSizesMatchKernel(t *testing.T) {
	testutil.RequireCapability(t, unix.CAP_NET_ADMIN, "CAP_NET_ADMIN")
	rmemMax, wmemMax := sysctlInt(t, "net/core/rmem_max"), sysctlInt(t, "net/core/wmem_max")
	k := cntest.New(&cntest.Options{RmemMax: rmemMax, WmemMax: wmemMax})
	sizes := []int{0, 1, 1151, 1152, 1153, 2303, 2304, 4607, 212992, rmemMax, rmemMax + 1, wmemMax + 1,
		1<<30 - 1, 1 << 30, 1<<30 + 1, math.MaxInt32}
	type bufOps struct {
		name     string
		set      func(*connector.Conn, int) error
		get      func(*connector.Conn) (int, error)
		raw, got int // the plain option and the one read back
	}
	ops := []bufOps{
		{"read", (*connector.Conn).SetReadBuffer, (*connector.Conn).ReadBuffer, unix.SO_RCVBUF, unix.SO_RCVBUF},
		{"write", (*connector.Conn).SetWriteBuffer, (*connector.Conn).WriteBuffer, unix.SO_SNDBUF, unix.SO_SNDBUF},
	}
	open := func(dial testutil.DialFunc) *connector.Conn { return testutil.Dial(t, dial, nil) }
	real, fake, fakeUnpriv := open(connector.Dial), open(k.Dial), open(k.DialUnprivileged)
	for _, op := range ops {
		for _, n := range sizes {
			size := func(c *connector.Conn) int {
				t.Helper()
				if err := op.set(c, n); err != nil {
					t.Fatalf("%s buffer %d: %v", op.name, n, err)
				}
				v, err := op.get(c)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			if r, f := size(real), size(fake); r != f {
				t.Errorf("privileged %s buffer %d: the kernel keeps %d, the fake %d", op.name, n, r, f)
			}
			fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, connector.Protocol)
			if err != nil {
				t.Fatal(err)
			}
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, op.raw, n); err != nil {
				t.Fatalf("setsockopt %d: %v", n, err)
			}
			r, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, op.got)
			unix.Close(fd)
			if err != nil {
				t.Fatal(err)
			}
			if f := size(fakeUnpriv); r != f {
				t.Errorf("unprivileged %s buffer %d: the kernel keeps %d, the fake %d", op.name, n, r, f)
			}
		}
	}
	bad := []int{-1, math.MinInt32}
	if math.MaxInt > math.MaxInt32 {
		big := uint64(1) << 31 // written so that it compiles for 32-bit systems
		bad = append(bad, int(big), int(big<<1|5))
	}
	for _, n := range bad {
		for _, c := range []*connector.Conn{real, fake} {
			if err := c.SetReadBuffer(n); !errors.Is(err, connector.ErrInvalidConfig) {
				t.Errorf("SetReadBuffer(%d) = %v, want ErrInvalidConfig", n, err)
			}
		}
		_, rerr := connector.Dial(&connector.Config{ReadBufferSize: n})
		_, ferr := k.Dial(&connector.Config{ReadBufferSize: n})
		if !errors.Is(rerr, connector.ErrInvalidConfig) || !errors.Is(ferr, connector.ErrInvalidConfig) || rerr.Error() != ferr.Error() {
			t.Errorf("ReadBufferSize %d: Dial = %v, the fake's Dial = %v; want the same ErrInvalidConfig", n, rerr, ferr)
		}
	}
}

func sysctlInt(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

// TestIntegrationSendSizeMatchesKernel: a datagram may be at most the send
// buffer minus 32 bytes (netlink_sendmsg); one byte more fails with
// EMSGSIZE, on real sockets and on the fake alike.
func TestIntegrationSendSizeMatchesKernel(t *testing.T) {
	testutil.RequireInitialNetNS(t)
	testutil.RequireCapability(t, unix.CAP_NET_ADMIN, "CAP_NET_ADMIN")
	k := cntest.New(nil)
	for name, dial := range map[string]testutil.DialFunc{"kernel": connector.Dial, "fake": k.Dial} {
		rx, tx := testutil.Pair(t, dial, &connector.Config{ReadBufferSize: 1 << 20})
		if err := tx.SetWriteBuffer(0); err != nil { // the minimum
			t.Fatal(err)
		}
		sndbuf, err := tx.WriteBuffer()
		if err != nil {
			t.Fatal(err)
		}
		// The datagram is a netlink header, a cn_msg header and the payload.
		fits := sndbuf - 32 - cntest.NetlinkHeaderLen - cntest.MessageHeaderLen
		id := connector.CBID{Idx: 0x7e57, Val: 0x5e4d}
		if err := tx.SendTo(rx.PortID(), connector.Message{ID: id, Data: make([]byte, fits)}); err != nil {
			t.Errorf("%s: a %d-byte datagram with a %d-byte send buffer: %v", name, fits+36, sndbuf, err)
		}
		err = tx.SendTo(rx.PortID(), connector.Message{ID: id, Data: make([]byte, fits+1)})
		if !errors.Is(err, unix.EMSGSIZE) || !errors.Is(err, connector.ErrMessageTooLarge) {
			t.Errorf("%s: a %d-byte datagram with a %d-byte send buffer: %v, want EMSGSIZE", name, fits+37, sndbuf, err)
		}
	}
}

// TestIntegrationTrueSizeMatchesKernel fills a real socket and a fake one,
// both with a 131072-byte receive buffer, with datagrams of one size at a
// time, by userspace unicast (until the sender is told to wait) and by
// multicast (until the kernel drops), and expects as many to fit in the
// fake as in the kernel: the fake charges each datagram the kernel's
// truesize (the allocator's object plus the sk_buff; small heads from 6.3
// on; a vmalloc'ed head for a unicast above NLMSG_GOODSIZE) and queues it
// as netlink does. The sizes straddle the allocator's boundaries.
func TestIntegrationTrueSizeMatchesKernel(t *testing.T) {
	testutil.RequireInitialNetNS(t)
	testutil.RequireCapability(t, unix.CAP_NET_ADMIN, "CAP_NET_ADMIN")
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	release := unix.ByteSliceToString(u.Release[:])
	// The small-head cache's size depends on the kernel's configuration:
	// take it from the charge of one small datagram (ignored before 6.3).
	small := rmemOfOne(t, 40) - 256
	if small%64 != 0 {
		t.Fatalf("a 76-byte datagram is charged %d bytes: not a 64-byte multiple plus the 256-byte sk_buff", small+256)
	}
	k := cntest.New(&cntest.Options{Release: release, SmallHeadCache: small})
	if got := k.TrueSize(76, true); got != small+256 {
		t.Errorf("kernel %s: the fake charges a 76-byte datagram %d bytes, the kernel %d", release, got, small+256)
	}
	realEmpty := func(c *connector.Conn) bool { return queueEmpty(t, c) }
	fakeEmpty := func(c *connector.Conn) bool { return k.Queued(c.PortID()) == 0 }
	for _, payload := range []int{0, 40, 220, 221, 348, 349, 700, 1500, 3740, 3741, 8000, 16000} {
		for _, multicast := range []bool{false, true} {
			real := alone(t, func(g connector.Group) (int, int) {
				return fitCount(t, g, payload, multicast, connector.Dial, realEmpty)
			})
			fake, _ := fitCount(t, 23, payload, multicast, k.Dial, fakeEmpty)
			t.Logf("kernel %s, %d-byte datagrams, multicast %v: %d fit in the kernel, %d in the fake", release, 36+payload, multicast, real, fake)
			if real != fake {
				t.Errorf("kernel %s, %d-byte datagrams (multicast %v): %d fit in a 131072-byte receive buffer, the fake queued %d", release, 36+payload, multicast, real, fake)
			}
		}
	}
}

// rmemOfOne queues one datagram of 36+payload bytes on a fresh socket and
// returns what the kernel charged for it: the socket's Rmem in
// /proc/net/netlink (sk_rmem_alloc).
func rmemOfOne(t *testing.T, payload int) int {
	t.Helper()
	rx, tx := testutil.Pair(t, connector.Dial, nil)
	if err := tx.SendTo(rx.PortID(), connector.Message{ID: connector.CBID{Idx: 23, Val: 0x75e}, Data: make([]byte, payload)}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/net/netlink")
	if err != nil {
		t.Fatal(err)
	}
	// sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) >= 5 && f[1] == strconv.Itoa(connector.Protocol) && f[2] == strconv.FormatUint(uint64(rx.PortID()), 10) {
			n, err := strconv.Atoi(f[4])
			if err != nil {
				t.Fatalf("/proc/net/netlink: Rmem %q: %v", f[4], err)
			}
			return n
		}
	}
	t.Fatalf("port %d not in /proc/net/netlink", rx.PortID())
	return 0
}

// queueEmpty reports whether c's receive queue is empty, without taking a
// pending overrun report from it (testutil.QueueEmpty).
func queueEmpty(t *testing.T, c *connector.Conn) bool {
	t.Helper()
	return testutil.QueueEmpty(t, c)
}

// fitCount sends datagrams of 36+payload bytes from one socket to another
// whose receive buffer is 131072 bytes, without reading, and returns how
// many were queued: by unicast, those sent before the sender was told to
// wait; by multicast (200 sent), those read back before the queue was
// empty, and how many datagrams from other senders were read with them.
func fitCount(t *testing.T, g connector.Group, payload int, multicast bool, dial testutil.DialFunc, empty func(*connector.Conn) bool) (n, foreign int) {
	t.Helper()
	// The unicast count joins no group: other processes' multicasts on g
	// would take room.
	cfg := &connector.Config{}
	if multicast {
		cfg.Groups = []connector.Group{g}
	}
	rx, tx := testutil.Pair(t, dial, cfg)
	defer rx.Close() // now: the test calls fitCount many times
	defer tx.Close()
	if err := rx.SetReadBuffer(65536); err != nil { // the kernel doubles it
		t.Fatal(err)
	}
	if err := tx.SetWriteBuffer(1 << 20); err != nil {
		t.Fatal(err)
	}
	id := connector.CBID{Idx: uint32(g), Val: 0x75e}
	m := connector.Message{ID: id, Data: make([]byte, payload)}
	if !multicast {
		for ; n < 10000; n++ {
			_ = tx.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
			m.Seq = uint32(n)
			if err := tx.SendTo(rx.PortID(), m); err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("unicast %d: %v", n, err)
				}
				break
			}
		}
		return n, 0
	}
	for seq := range uint32(200) {
		m.Seq = seq
		if err := tx.Multicast(g, m); err != nil {
			t.Fatal(err)
		}
	}
	_ = rx.SetReadDeadline(time.Now().Add(wait))
	for !empty(rx) {
		msgs, from, err := rx.Receive()
		if errors.Is(err, connector.ErrOverrun) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if from.Port == tx.PortID() && len(msgs) == 1 && msgs[0].ID == id {
			n++
		} else {
			foreign++
		}
	}
	return n, foreign
}
