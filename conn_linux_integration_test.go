//go:build linux

package connector_test

// Integration tests against the real kernel. They need the initial network
// namespace and CAP_NET_ADMIN, which CI has (it runs as root), and skip,
// saying which is missing, only where that is really not available.
//
// Userspace multicast traffic uses groups above the kernel's range, one per
// test; a kernel group (5, CN_IDX_BB, which no in-tree agent uses) only
// where spoofing is the point. Every test's messages carry their own random
// callback id, so traffic from other tests or other processes is skipped.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/testutil"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Groups used by the tests.
const (
	groupExchange   connector.Group = 20
	groupKernelOnly connector.Group = 23
	groupJoinA      connector.Group = 25
	groupJoinB      connector.Group = 26
	groupNoCap      connector.Group = 27
	groupNetNS      connector.Group = 28

	// groupSpoof is a kernel group (1 to 10) that no kernel agent uses:
	// CN_IDX_BB, reserved for an out-of-tree framework. Spoofing group 1
	// would reach the machine's real process-event listeners.
	groupSpoof connector.Group = 5
)

func TestIntegrationExchange(t *testing.T) {
	requirePrivileged(t)
	sizes := []int{0, 1, 20, 4096, connector.MaxMessageSize}
	for _, tier := range tiers {
		for _, mode := range []string{"unicast", "multicast"} {
			t.Run(tier.name+"/"+mode, func(t *testing.T) {
				rx := dial(t, &connector.Config{Groups: []connector.Group{groupExchange}})
				tx := dial(t, nil)
				src := tier.open(t, rx)
				id := testID()

				want := make([]connector.Message, len(sizes))
				for i, n := range sizes {
					m := connector.Message{ID: id, Seq: 100 + uint32(i), Ack: rand.Uint32(), Flags: 0x8001 + uint16(i), Data: payload(n, byte(i))}
					want[i] = m
					var err error
					if mode == "unicast" {
						err = tx.SendTo(rx.PortID(), m)
					} else {
						err = tx.Multicast(groupExchange, m)
					}
					if err != nil {
						t.Fatalf("sending %d bytes: %v", n, err)
					}
				}

				wantFrom := connector.Sender{Port: tx.PortID()}
				if mode == "multicast" {
					wantFrom.Group = groupExchange
				}
				for _, w := range want {
					m, from := nextWith(t, src, withID(id))
					// Compare the payload with bytes.Equal: cmp walks
					// large byte slices one element at a time.
					n := len(w.Data)
					if !bytes.Equal(w.Data, m.Data) {
						t.Errorf("payload of %d bytes differs: received %d bytes", n, len(m.Data))
					}
					w.Data, m.Data = nil, nil
					if diff := cmp.Diff(w, m); diff != "" {
						t.Errorf("header of the %d-byte message differs (-sent +received):\n%s", n, diff)
					}
					if from != wantFrom {
						t.Errorf("sender = %+v, want %+v", from, wantFrom)
					}
					if from.Kernel() {
						t.Errorf("Sender(%v).Kernel() = true for a userspace sender", from)
					}
				}
				if st := rx.Stats(); st.Messages < uint64(len(sizes)) || st.Datagrams < uint64(len(sizes)) || st.Foreign+st.Malformed+st.Truncated+st.Overruns != 0 {
					t.Errorf("Stats = %+v after %d clean messages", st, len(sizes))
				}
			})
		}
	}
}

// TestIntegrationReaderBatches queues many datagrams of different sizes
// before reading, so that each recvmmsg fills a whole batch, and expects
// every message intact and in order. It is the regression test for the
// 32-bit mmsghdr layout: with a misplaced second entry the Reader failed
// after its first message on 386, arm and mipsle (run it with GOARCH=386).
func TestIntegrationReaderBatches(t *testing.T) {
	requirePrivileged(t)
	const n = 100
	for _, batch := range []int{2, 8, connector.DefaultBatchSize, 64} {
		t.Run(fmt.Sprint(batch), func(t *testing.T) {
			rx := dial(t, &connector.Config{BatchSize: batch, ReadBufferSize: 1 << 20})
			tx := dial(t, nil)
			id := testID()
			for i := range n {
				m := connector.Message{ID: id, Seq: uint32(i), Ack: ^uint32(i), Data: payload(i*13%300, byte(i))}
				if err := tx.SendTo(rx.PortID(), m); err != nil {
					t.Fatalf("sending message %d: %v", i, err)
				}
			}
			r := rx.NewReader()
			defer r.Release()
			for i := range n {
				m, from, err := r.Next()
				if err != nil {
					t.Fatalf("message %d of %d: %v", i, n, err)
				}
				if m.ID != id || m.Seq != uint32(i) || m.Ack != ^uint32(i) || !bytes.Equal(m.Data, payload(i*13%300, byte(i))) {
					t.Fatalf("message %d: got id %v seq %d ack %#x with %d bytes", i, m.ID, m.Seq, m.Ack, len(m.Data))
				}
				if from != (connector.Sender{Port: tx.PortID()}) {
					t.Fatalf("message %d: sender %+v, want port %d", i, from, tx.PortID())
				}
			}
			if st := rx.Stats(); st.Datagrams != n || st.Messages != n || st.Foreign+st.Malformed+st.Truncated+st.Overruns != 0 {
				t.Errorf("Stats = %+v after %d clean datagrams", st, n)
			}
		})
	}
}

// eachRawTier runs f as a subtest for each receive tier, with a fresh
// receiver, the tier's source on it, a raw sender and a fresh test id.
func eachRawTier(t *testing.T, f func(t *testing.T, rx *connector.Conn, src source, p *rawPeer, id connector.CBID)) {
	for _, tier := range tiers {
		t.Run(tier.name, func(t *testing.T) {
			rx := dial(t, nil)
			f(t, rx, tier.open(t, rx), newRawPeer(t), testID())
		})
	}
}

// TestIntegrationBundles sends datagrams packing several messages, the way
// w1 bundles replies and ucon.c pads them, and expects every message.
func TestIntegrationBundles(t *testing.T) {
	requirePrivileged(t)
	eachRawTier(t, func(t *testing.T, rx *connector.Conn, src source, p *rawPeer, id connector.CBID) {
		// Two netlink messages in one datagram, the first padded to 4 bytes.
		first := nlmsg(-1, cnmsg(id, 1, -1, []byte("one")))
		first = append(first, 0) // NLMSG_ALIGN padding
		p.sendTo(t, rx.PortID(), append(first, nlmsg(-1, cnmsg(id, 2, -1, []byte("two")))...))
		// Two cn_msg records back to back in one netlink message (w1).
		p.sendTo(t, rx.PortID(), nlmsg(-1, append(cnmsg(id, 3, -1, []byte("three")), cnmsg(id, 4, -1, nil)...)))
		// nlmsg_len rounded up as samples/connector/ucon.c does: the
		// padding lies inside the netlink message.
		p.sendTo(t, rx.PortID(), nlmsg(-1, append(cnmsg(id, 5, -1, []byte("fives")), 0, 0, 0)))

		want := []string{"one", "two", "three", "", "fives"}
		for i, w := range want {
			m, from := nextWith(t, src, withID(id))
			if m.Seq != uint32(i+1) || string(m.Data) != w {
				t.Errorf("message %d: seq %d data %q, want seq %d data %q", i, m.Seq, m.Data, i+1, w)
			}
			if from.Port != p.port {
				t.Errorf("message %d: sender %v, want port %d", i, from, p.port)
			}
		}
		if st := rx.Stats(); st.Datagrams != 3 || st.Messages != 5 || st.Malformed != 0 {
			t.Errorf("Stats = %+v, want 3 datagrams, 5 messages, nothing malformed", st)
		}
	})
}

// TestIntegrationProcListen does the proc connector's LISTEN/ack round trip
// through the core API only.
func TestIntegrationProcListen(t *testing.T) {
	requirePrivileged(t)
	testutil.RequireProcEvents(t)
	for _, tier := range tiers {
		t.Run(tier.name, func(t *testing.T) {
			// A large buffer: other listeners on the machine may keep
			// process events flowing on group 1.
			c := dial(t, &connector.Config{Groups: []connector.Group{1}, ReadBufferSize: 1 << 20})
			m, from := procListenAck(t, c, tier.open(t, c))
			if from != (connector.Sender{Port: 0, Group: 1}) {
				t.Errorf("ack sender = %+v, want the kernel on group 1", from)
			}
			if m.Flags != 0 || len(m.Data) < 20 {
				t.Errorf("ack: flags %#x, %d payload bytes; want flags 0 and a struct proc_event", m.Flags, len(m.Data))
			}
			if st := c.Stats(); st.Messages == 0 || st.Foreign != 0 || st.Malformed != 0 {
				t.Errorf("Stats = %+v after receiving kernel messages only", st)
			}
		})
	}
}

func TestIntegrationOverrun(t *testing.T) {
	requirePrivileged(t)
	for _, tier := range tiers {
		t.Run(tier.name, func(t *testing.T) {
			// What fits is counted: no other socket's multicasts may
			// take room (testutil.JoinQuietGroup).
			rx := dial(t, nil)
			groupOverrun := testutil.JoinQuietGroup(t, rx)
			if err := rx.SetReadBuffer(4096); err != nil {
				t.Fatal(err)
			}
			tx := dial(t, nil)
			src := tier.open(t, rx)
			id := testID()

			// Flood without reading: the kernel queues what fits, then
			// drops and reports ENOBUFS once.
			const flood = 256
			for i := range flood {
				if err := tx.Multicast(groupOverrun, connector.Message{ID: id, Seq: uint32(i), Data: payload(64, 1)}); err != nil {
					t.Fatalf("multicast %d: %v", i, err)
				}
			}
			_, err := nextErr(t, src, id)
			errorsIsAll(t, err, connector.ErrOverrun, syscall.ENOBUFS)
			if !errors.Is(err, connector.ErrOverrun) {
				t.FailNow()
			}
			mustContain(t, err, "ENOBUFS", "ReadBufferSize")
			if st := rx.Stats(); st.Overruns != 1 {
				t.Errorf("Stats.Overruns = %d, want 1", st.Overruns)
			}

			// The messages queued before the overrun follow, in order.
			// Drain the queue: the kernel drops everything new until it
			// is empty.
			got := 0
			for !queueEmpty(t, rx) {
				m, _ := nextWith(t, src, withID(id))
				if m.Seq != uint32(got) {
					t.Fatalf("after the overrun got seq %d, want %d", m.Seq, got)
				}
				got++
			}
			// Then traffic flows again.
			for i := range 3 {
				if err := tx.Multicast(groupOverrun, connector.Message{ID: id, Seq: flood + uint32(i)}); err != nil {
					t.Fatal(err)
				}
			}
			for {
				m, _ := nextWith(t, src, withID(id))
				if m.Seq < flood {
					if m.Seq != uint32(got) {
						t.Fatalf("after the overrun got seq %d, want %d", m.Seq, got)
					}
					got++
					continue
				}
				if m.Seq != flood {
					t.Fatalf("after draining got seq %d, want %d", m.Seq, flood)
				}
				break
			}
			for i := 1; i < 3; i++ {
				if m, _ := nextWith(t, src, withID(id)); m.Seq != flood+uint32(i) {
					t.Fatalf("after recovery got seq %d, want %d", m.Seq, flood+i)
				}
			}
			if got == 0 || got >= flood {
				t.Errorf("%d of %d flooded messages were queued; want some but not all", got, flood)
			}
			if st := rx.Stats(); st.Overruns != 1 {
				t.Errorf("Stats.Overruns = %d after recovery, want 1", st.Overruns)
			}
			t.Logf("%d of %d messages fit in the receive buffer", got, flood)
		})
	}
}

// TestIntegrationNoENOBUFS floods a socket with NETLINK_NO_ENOBUFS: messages
// are lost without an error, and delivery resumes.
func TestIntegrationNoENOBUFS(t *testing.T) {
	requirePrivileged(t)
	for _, tier := range tiers {
		t.Run(tier.name, func(t *testing.T) {
			rx := dial(t, &connector.Config{NoENOBUFS: true, ReadBufferSize: 4096})
			groupNoENOBUFS := testutil.JoinQuietGroup(t, rx) // as in TestIntegrationOverrun
			tx := dial(t, nil)
			src := tier.open(t, rx)
			id := testID()
			const flood = 256
			for i := range flood {
				if err := tx.Multicast(groupNoENOBUFS, connector.Message{ID: id, Seq: uint32(i)}); err != nil {
					t.Fatal(err)
				}
			}
			got := 0
			for !queueEmpty(t, rx) {
				if m, _ := nextWith(t, src, withID(id)); m.Seq != uint32(got) {
					t.Fatalf("got seq %d, want %d", m.Seq, got)
				}
				got++
			}
			if err := tx.Multicast(groupNoENOBUFS, connector.Message{ID: id, Seq: flood}); err != nil {
				t.Fatal(err)
			}
			for {
				m, _ := nextWith(t, src, withID(id))
				if m.Seq == flood {
					break
				}
				got++
			}
			if got >= flood {
				t.Errorf("all %d messages fit; the flood did not overrun the buffer", flood)
			}
			if st := rx.Stats(); st.Overruns != 0 {
				t.Errorf("Stats.Overruns = %d with NoENOBUFS, want 0", st.Overruns)
			}
		})
	}
}

func TestIntegrationClose(t *testing.T) {
	testutil.RequireConnector(t)
	// The runtime opens its poller's descriptors on first use: do that
	// before counting.
	warm, err := connector.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = warm.Close()
	fds := testutil.FDCount(t)
	testutil.CheckGoroutines(t, promptly)

	c, err := connector.Dial(nil) // no deadline: the readers block until Close
	if err != nil {
		t.Fatal(err)
	}
	r := c.NewReader()
	type result struct {
		name string
		err  error
	}
	done := make(chan result, 2)
	go func() { _, _, err := r.Next(); done <- result{"Reader.Next", err} }()
	go func() { _, _, err := c.Receive(); done <- result{"Receive", err} }()
	if !testutil.WaitFor(waitTimeout, func() bool { return ioWaiters("TestIntegrationClose") >= 2 }) {
		t.Fatal("the readers did not block waiting for the socket")
	}

	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	timeout := time.After(promptly)
	for range 2 {
		select {
		case res := <-done:
			errorsIsAll(t, res.err, connector.ErrClosed, os.ErrClosed, net.ErrClosed)
		case <-timeout:
			t.Fatalf("a blocked reader was still blocked %v after Close", promptly)
		}
	}

	// Every later call fails with ErrClosed.
	id := testID()
	later := map[string]func() error{
		"Reader.Next":      func() error { _, _, err := r.Next(); return err },
		"new Reader.Next":  func() error { nr := c.NewReader(); defer nr.Release(); _, _, err := nr.Next(); return err },
		"Receive":          func() error { _, _, err := c.Receive(); return err },
		"Send":             func() error { return c.Send(connector.Message{ID: id}) },
		"SendTo":           func() error { return c.SendTo(1, connector.Message{ID: id}) },
		"Multicast":        func() error { return c.Multicast(groupExchange, connector.Message{ID: id}) },
		"JoinGroup":        func() error { return c.JoinGroup(groupExchange) },
		"LeaveGroup":       func() error { return c.LeaveGroup(groupExchange) },
		"Groups":           func() error { _, err := c.Groups(); return err },
		"SetDeadline":      func() error { return c.SetDeadline(time.Now()) },
		"SetReadDeadline":  func() error { return c.SetReadDeadline(time.Now()) },
		"SetWriteDeadline": func() error { return c.SetWriteDeadline(time.Now()) },
		"SetReadBuffer":    func() error { return c.SetReadBuffer(4096) },
		"ReadBuffer":       func() error { _, err := c.ReadBuffer(); return err },
		"SetWriteBuffer":   func() error { return c.SetWriteBuffer(4096) },
		"WriteBuffer":      func() error { _, err := c.WriteBuffer(); return err },
		"SetNoENOBUFS":     func() error { return c.SetNoENOBUFS(true) },
		"SetBPF":           func() error { return c.SetBPF([]bpf.RawInstruction{{Op: 0x06}}) },
		"RemoveBPF":        func() error { return c.RemoveBPF() },
		"SyscallConn":      func() error { _, err := c.SyscallConn(); return err },
		"Close":            func() error { return c.Close() },
	}
	for name, call := range later {
		err := call()
		if !errors.Is(err, connector.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
		var oe *connector.OpError
		if !errors.As(err, &oe) {
			t.Errorf("%s after Close: error %T is not an *OpError", name, err)
		}
	}
	r.Release()
	r.Release() // idempotent

	if got := testutil.FDCount(t); got != fds {
		t.Errorf("open file descriptors: %d before Dial, %d after Close", fds, got)
	}
}

// TestIntegrationCloseBuffered checks that Close also ends the messages a
// Reader still holds from an earlier receive.
func TestIntegrationCloseBuffered(t *testing.T) {
	requirePrivileged(t)
	rx := dial(t, nil)
	tx := dial(t, nil)
	id := testID()
	for i := range 3 {
		if err := tx.SendTo(rx.PortID(), connector.Message{ID: id, Seq: uint32(i)}); err != nil {
			t.Fatal(err)
		}
	}
	r := rx.NewReader()
	defer r.Release()
	// One receive takes all three; the Reader hands out the first.
	if m, _, err := r.Next(); err != nil || m.Seq != 0 {
		t.Fatalf("Next: seq %d, %v", m.Seq, err)
	}
	if !queueEmpty(t, rx) {
		t.Fatal("the Reader left messages in the socket; want all three in its batch")
	}
	if err := rx.Close(); err != nil {
		t.Fatal(err)
	}
	if m, _, err := r.Next(); !errors.Is(err, connector.ErrClosed) {
		t.Errorf("Next after Close returned seq %d, %v; want ErrClosed", m.Seq, err)
	}
	r.Release()
	if st := rx.Stats(); st.Datagrams != 3 || st.Messages != 1 || st.Unread != 2 {
		t.Errorf("Stats after Close %+v; want 3 datagrams, 1 message returned, 2 unread", st)
	}
}

// TestIntegrationReleaseBuffered checks that Release counts the messages
// its Reader still held, and that a new Reader goes on with the next.
func TestIntegrationReleaseBuffered(t *testing.T) {
	requirePrivileged(t)
	rx := dial(t, nil)
	tx := dial(t, nil)
	id := testID()
	for i := range 4 {
		if err := tx.SendTo(rx.PortID(), connector.Message{ID: id, Seq: uint32(i)}); err != nil {
			t.Fatal(err)
		}
	}
	r := rx.NewReader()
	if m, _, err := r.Next(); err != nil || m.Seq != 0 {
		t.Fatalf("Next: seq %d, %v", m.Seq, err)
	}
	if !queueEmpty(t, rx) {
		t.Fatal("the Reader left messages in the socket; want all four in its batch")
	}
	r.Release()
	if st := rx.Stats(); st.Datagrams != 4 || st.Messages != 1 || st.Unread != 3 {
		t.Errorf("Stats after Release %+v; want 4 datagrams, 1 message returned, 3 unread", st)
	}
	if err := tx.SendTo(rx.PortID(), connector.Message{ID: id, Seq: 4}); err != nil {
		t.Fatal(err)
	}
	r2 := rx.NewReader()
	defer r2.Release()
	if m, _, err := r2.Next(); err != nil || m.Seq != 4 {
		t.Errorf("new Reader's Next: seq %d, %v; want 4", m.Seq, err)
	}
}

// TestIntegrationReleasedReader checks that a released Reader fails cleanly
// and that its buffers serve the next Reader.
func TestIntegrationReleasedReader(t *testing.T) {
	requirePrivileged(t)
	rx := dial(t, nil)
	tx := dial(t, nil)
	r := rx.NewReader()
	r.Release()
	if _, _, err := r.Next(); !errors.Is(err, connector.ErrClosed) {
		t.Errorf("Next after Release: %v, want ErrClosed", err)
	}
	id := testID()
	if err := tx.SendTo(rx.PortID(), connector.Message{ID: id, Data: []byte("after release")}); err != nil {
		t.Fatal(err)
	}
	src := tiers[0].open(t, rx)
	if m, _ := nextWith(t, src, withID(id)); string(m.Data) != "after release" {
		t.Errorf("got %q", m.Data)
	}
}

// TestIntegrationCloseUnblocksSend closes a Conn whose SendTo waits for room
// in a full receiver.
func TestIntegrationCloseUnblocksSend(t *testing.T) {
	requirePrivileged(t)
	rx := dial(t, nil)
	if err := rx.SetReadBuffer(1); err != nil { // the kernel's minimum
		t.Fatal(err)
	}
	tx, err := connector.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	closeUnblocksSend(t, tx, rx, 512, "sendRetry")
}

// closeUnblocksSend sends size-byte payloads to rx from tx until a SendTo waits for room in
// rx's full queue (its goroutine's stack holds waitFrame, the function that
// waits), closes tx and checks that the SendTo ends promptly with ErrClosed.
func closeUnblocksSend(t *testing.T, tx, rx *connector.Conn, size int, waitFrame string) {
	t.Helper()
	id := testID()
	done := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			if err := tx.SendTo(rx.PortID(), connector.Message{ID: id, Seq: uint32(i), Data: payload(size, 0)}); err != nil {
				done <- err
				return
			}
		}
	}()
	if !testutil.WaitFor(waitTimeout, func() bool { return stackHas("closeUnblocksSend", waitFrame) }) {
		t.Fatal("SendTo never waited for the full receiver")
	}
	if err := tx.Close(); err != nil {
		t.Fatal(err)
	}
	awaitErr(t, done, promptly, connector.ErrClosed, "SendTo ended by Close")
}

// stackHas reports whether one goroutine's stack contains every part.
func stackHas(parts ...string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
outer:
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, p := range parts {
			if !strings.Contains(g, p) {
				continue outer
			}
		}
		return true
	}
	return false
}

// TestIntegrationSenderPolicy checks that userspace messages on kernel
// groups (and anywhere with SendersKernelOnly) are dropped and counted while real
// kernel messages arrive.
func TestIntegrationSenderPolicy(t *testing.T) {
	requirePrivileged(t)
	testutil.RequireProcEvents(t)
	for _, tier := range tiers {
		t.Run(tier.name+"/kernel group", func(t *testing.T) {
			// rx joins group 1 only after the userspace peer's unicast is
			// queued: a storm of process events from other programs would
			// fill its buffer before the proc connector's filter applies
			// (LISTEN), and the unicast would wait for room forever.
			rx := dial(t, &connector.Config{Groups: []connector.Group{groupSpoof}, ReadBufferSize: 1 << 20})
			src := tier.open(t, rx)
			spoofer := dial(t, nil)
			id := connector.CBID{Idx: uint32(groupSpoof), Val: 1}
			spoof := connector.Message{ID: id, Seq: 7, Data: []byte("spoofed kernel message")}
			if err := spoofer.Multicast(groupSpoof, spoof); err != nil {
				t.Fatal(err)
			}
			// A unicast from the same peer is not on a kernel group: it
			// arrives.
			uid := testID()
			if err := spoofer.SendTo(rx.PortID(), connector.Message{ID: uid, Data: []byte("unicast")}); err != nil {
				t.Fatal(err)
			}
			if err := rx.JoinGroup(1); err != nil {
				t.Fatal(err)
			}
			gotUnicast := false
			rejectSpoof := func(m connector.Message, from connector.Sender) {
				if from.Port == spoofer.PortID() && from.Group == groupSpoof {
					t.Fatalf("the spoofed message on kernel group %d was delivered: %+v", groupSpoof, m)
				}
				if m.ID == uid && from == (connector.Sender{Port: spoofer.PortID()}) {
					gotUnicast = true
				}
			}
			// The proc connector's ack, a real kernel message, arrives
			// after both.
			procListenAckFiltered(t, rx, src, rejectSpoof)
			if !gotUnicast {
				t.Error("the unicast from the userspace peer was not delivered")
			}
			if st := rx.Stats(); st.Foreign < 1 {
				t.Errorf("Stats.Foreign = %d, want the spoof counted", st.Foreign)
			}
		})
		t.Run(tier.name+"/SendersKernelOnly", func(t *testing.T) {
			// Group 1 is joined after the unicast, as above.
			rx := dial(t, &connector.Config{Groups: []connector.Group{groupKernelOnly}, Senders: connector.SendersKernelOnly, ReadBufferSize: 1 << 20})
			src := tier.open(t, rx)
			peer := dial(t, nil)
			id := testID()
			if err := peer.Multicast(groupKernelOnly, connector.Message{ID: id, Data: []byte("multicast")}); err != nil {
				t.Fatal(err)
			}
			if err := peer.SendTo(rx.PortID(), connector.Message{ID: id, Data: []byte("unicast")}); err != nil {
				t.Fatal(err)
			}
			if err := rx.JoinGroup(1); err != nil {
				t.Fatal(err)
			}
			procListenAckFiltered(t, rx, src, func(m connector.Message, from connector.Sender) {
				if !from.Kernel() {
					t.Fatalf("SendersKernelOnly delivered a message from %v: %+v", from, m)
				}
			})
			if st := rx.Stats(); st.Foreign < 2 {
				t.Errorf("Stats.Foreign = %d, want both userspace messages counted", st.Foreign)
			}
		})
	}
	t.Run("SendersAny", func(t *testing.T) {
		rx := dial(t, &connector.Config{Groups: []connector.Group{groupSpoof}, Senders: connector.SendersAny})
		peer := dial(t, nil)
		id := testID()
		if err := peer.Multicast(groupSpoof, connector.Message{ID: id, Data: []byte("user message on a kernel group")}); err != nil {
			t.Fatal(err)
		}
		src := tiers[0].open(t, rx)
		m, from := nextWith(t, src, withID(id))
		if want := (connector.Sender{Port: peer.PortID(), Group: groupSpoof}); from != want || string(m.Data) != "user message on a kernel group" {
			t.Errorf("got %q from %+v, want the message from %+v", m.Data, from, want)
		}
		if st := rx.Stats(); st.Foreign != 0 {
			t.Errorf("Stats.Foreign = %d with SendersAny", st.Foreign)
		}
	})
}

// procListenAckFiltered is procListenAck with every message before the ack
// shown to inspect first.
func procListenAckFiltered(t testing.TB, c *connector.Conn, src source, inspect func(connector.Message, connector.Sender)) {
	t.Helper()
	procListenAck(t, c, inspectSource{src, inspect})
}

type inspectSource struct {
	source
	inspect func(connector.Message, connector.Sender)
}

func (s inspectSource) next() (connector.Message, connector.Sender, error) {
	m, from, err := s.source.next()
	if err == nil {
		s.inspect(m, from)
	}
	return m, from, err
}

func TestIntegrationMalformed(t *testing.T) {
	requirePrivileged(t)
	eachRawTier(t, func(t *testing.T, rx *connector.Conn, src source, p *rawPeer, id connector.CBID) {
		good := func(seq uint32) []byte { return nlmsg(-1, cnmsg(id, seq, -1, []byte("good"))) }
		cases := []struct {
			name      string
			dgram     []byte
			reason    string
			goodFirst bool // a valid message precedes the bad bytes
		}{
			{"cn_msg len larger than its data", nlmsg(-1, cnmsg(id, 1, 100, []byte("four"))),
				"header len 100 is larger than the 4 payload bytes", false},
			{"cn_msg len beyond CONNECTOR_MAX_MSG_SIZE", nlmsg(-1, cnmsg(id, 1, 20000, make([]byte, 20000))),
				"header len 20000 exceeds the connector's limit of 16384", false},
			{"nlmsg_len larger than the datagram", nlmsg(200, cnmsg(id, 1, -1, []byte("four"))),
				"netlink length 200 is larger than the 40 bytes", false},
			{"nlmsg_len shorter than the headers", nlmsg(20, cnmsg(id, 1, -1, []byte("four"))),
				"netlink length 20 leaves no room for the 20-byte cn_msg header", false},
			{"truncated cn_msg header", nlmsg(-1, make([]byte, 10)),
				"netlink length 26 leaves no room", false},
			{"truncated netlink header", []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
				"10 bytes are too short for the 16-byte netlink header", false},
			{"garbage after the netlink message", append(good(1), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
				"7 bytes are too short for the 16-byte netlink header", true},
			{"garbage after the cn_msg", nlmsg(-1, append(cnmsg(id, 1, -1, []byte("good")), 0xee, 0xee, 0xee, 0xee, 0xee)),
				"5 bytes are too short for the 20-byte cn_msg header", true},
			{"non-zero padding", append(good(1), 0, 7),
				"2 bytes are too short for the 16-byte netlink header", true},
		}
		for i, tc := range cases {
			before := rx.Stats().Malformed
			p.sendTo(t, rx.PortID(), tc.dgram)
			p.sendTo(t, rx.PortID(), good(1000+uint32(i)))
			if tc.goodFirst {
				if m, _ := nextWith(t, src, withID(id)); m.Seq != 1 || string(m.Data) != "good" {
					t.Errorf("%s: the valid message before the bad bytes: seq %d %q", tc.name, m.Seq, m.Data)
				}
			}
			from, err := nextErr(t, src, id)
			errorsIsAll(t, err, connector.ErrMalformed)
			mustContain(t, err, "malformed", tc.reason, fmt.Sprintf("port %d", p.port))
			var me *connector.MessageError
			if !errors.As(err, &me) || !me.HasSender || me.Sender.Port != p.port {
				t.Errorf("%s: error %v does not carry the sender port %d as a *MessageError", tc.name, err, p.port)
			}
			if from.Port != p.port {
				t.Errorf("%s: sender %v, want port %d", tc.name, from, p.port)
			}
			if m, _ := nextWith(t, src, withID(id)); m.Seq != 1000+uint32(i) {
				t.Errorf("%s: next message seq %d, want %d", tc.name, m.Seq, 1000+i)
			}
			if got := rx.Stats().Malformed; got != before+1 {
				t.Errorf("%s: Stats.Malformed %d -> %d, want +1", tc.name, before, got)
			}
		}
	})
}

func TestIntegrationTruncated(t *testing.T) {
	requirePrivileged(t)
	const bufSize = 256
	for _, tier := range tiers {
		t.Run(tier.name, func(t *testing.T) {
			rx := dial(t, &connector.Config{MessageBufferSize: bufSize})
			if got := rx.Config().MessageBufferSize; got != bufSize {
				t.Fatalf("Config().MessageBufferSize = %d, want %d", got, bufSize)
			}
			tx := dial(t, nil)
			src := tier.open(t, rx)
			id := testID()
			fits := bufSize - 16 - connector.HeaderLen
			for i, n := range []int{1000, fits, fits + 1, 3} {
				if err := tx.SendTo(rx.PortID(), connector.Message{ID: id, Seq: uint32(i), Data: payload(n, 9)}); err != nil {
					t.Fatal(err)
				}
			}
			_, err := nextErr(t, src, id)
			errorsIsAll(t, err, connector.ErrTruncated)
			mustContain(t, err, "1036 bytes", "256-byte", "MessageBufferSize")
			if m, _ := nextWith(t, src, withID(id)); m.Seq != 1 || !bytes.Equal(m.Data, payload(fits, 9)) {
				t.Errorf("a datagram of exactly the buffer size: seq %d, %d bytes; want seq 1, %d bytes", m.Seq, len(m.Data), fits)
			}
			_, err = nextErr(t, src, id)
			errorsIsAll(t, err, connector.ErrTruncated)
			mustContain(t, err, "257 bytes")
			if m, _ := nextWith(t, src, withID(id)); m.Seq != 3 || !bytes.Equal(m.Data, payload(3, 9)) {
				t.Errorf("the message after the truncated ones: seq %d %q", m.Seq, m.Data)
			}
			if st := rx.Stats(); st.Truncated != 2 || st.Messages != 2 {
				t.Errorf("Stats = %+v, want 2 truncated and 2 delivered", st)
			}
		})
	}
}

func TestIntegrationSizes(t *testing.T) {
	requirePrivileged(t)
	rx := dial(t, &connector.Config{Groups: []connector.Group{groupExchange}})
	tx := dial(t, nil)
	id := testID()

	// To the kernel, the limit is CONNECTOR_MAX_MSG_SIZE for header and
	// payload together. The kernel drops unknown ids silently, so a message
	// of the largest size is accepted.
	if err := tx.Send(connector.Message{ID: id, Data: make([]byte, connector.MaxKernelPayload)}); err != nil {
		t.Errorf("Send of MaxKernelPayload bytes: %v", err)
	}
	err := tx.Send(connector.Message{ID: id, Data: make([]byte, connector.MaxKernelPayload+1)})
	errorsIsAll(t, err, connector.ErrMessageTooLarge)
	mustContain(t, err, "16365", "16364")

	for name, send := range map[string]func(connector.Message) error{
		"SendTo":    func(m connector.Message) error { return tx.SendTo(rx.PortID(), m) },
		"Multicast": func(m connector.Message) error { return tx.Multicast(groupExchange, m) },
	} {
		err := send(connector.Message{ID: id, Data: make([]byte, connector.MaxMessageSize+1)})
		errorsIsAll(t, err, connector.ErrMessageTooLarge)
		mustContain(t, err, "16385", "16384")
		if err := send(connector.Message{ID: id, Seq: 1, Data: payload(connector.MaxMessageSize, 3)}); err != nil {
			t.Fatalf("%s of %d bytes: %v", name, connector.MaxMessageSize, err)
		}
		src := tiers[0].open(t, rx)
		m, _ := nextWith(t, src, withID(id))
		if m.Seq != 1 || !bytes.Equal(m.Data, payload(connector.MaxMessageSize, 3)) {
			t.Errorf("%s: got seq %d with %d bytes, want the %d-byte message", name, m.Seq, len(m.Data), connector.MaxMessageSize)
		}
	}
}

// The no-CAP_NET_ADMIN helper: it re-executes the test binary, drops the
// capability for real and reports what each operation returned.
const helperNoCap = "nocap"

type capResult struct {
	Op         string
	Err        string
	Permission bool
}

func runNoCapHelper(args []string) int {
	// Credentials are per thread: drop the capability on this one and do
	// everything on it (it is never unlocked).
	runtime.LockOSThread()
	if err := testutil.DropCapabilityThread(unix.CAP_NET_ADMIN); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: nocap PORT GROUP")
		return 2
	}
	port, err1 := strconv.ParseUint(args[0], 10, 32)
	group, err2 := strconv.ParseUint(args[1], 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	enc := json.NewEncoder(os.Stdout)
	report := func(op string, err error) {
		r := capResult{Op: op, Permission: errors.Is(err, os.ErrPermission)}
		if err != nil {
			r.Err = err.Error()
		}
		_ = enc.Encode(r)
	}
	c, err := connector.Dial(nil)
	if err != nil {
		report("Dial", err)
		return 0
	}
	defer c.Close()
	m := connector.Message{ID: connector.CBID{Idx: 0x1fff, Val: 0xdead}, Data: []byte("from a process without CAP_NET_ADMIN")}
	report("SendTo", c.SendTo(uint32(port), m))
	report("Multicast", c.Multicast(connector.Group(group), m))
	report("JoinGroup(2)", c.JoinGroup(2))
	c2, err := connector.Dial(&connector.Config{Groups: []connector.Group{2}})
	if err == nil {
		c2.Close()
	}
	report("Dial(Groups: 2)", err)
	c3, err := connector.Dial(&connector.Config{Groups: []connector.Group{21, 22, 24}})
	if err == nil {
		c3.Close()
	}
	report("Dial(Groups: 21, 22, 24)", err)
	report("Send to the kernel", c.Send(m))
	return 0
}

func TestIntegrationPermissions(t *testing.T) {
	requirePrivileged(t)
	rx := dial(t, &connector.Config{Groups: []connector.Group{groupNoCap}})
	out, err := testutil.RunHelper(t, waitTimeout, helperNoCap, strconv.FormatUint(uint64(rx.PortID()), 10), groupNoCap.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("helper without CAP_NET_ADMIN reported:\n%s", out)
	got := map[string]capResult{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var r capResult
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("helper output %q: %v", out, err)
		}
		got[r.Op] = r
	}
	for _, op := range []string{"SendTo", "Multicast", "JoinGroup(2)", "Dial(Groups: 2)", "Dial(Groups: 21, 22, 24)"} {
		r, ok := got[op]
		switch {
		case !ok:
			t.Errorf("%s: the helper did not report it (output %q)", op, out)
		case !r.Permission:
			t.Errorf("%s without CAP_NET_ADMIN: %q, want an error matching os.ErrPermission", op, r.Err)
		case !strings.Contains(r.Err, "CAP_NET_ADMIN"):
			t.Errorf("%s without CAP_NET_ADMIN: error %q does not name the capability", op, r.Err)
		case strings.Count(r.Err, "connector:") != 1 || strings.Contains(r.Err, "netlink ") || strings.Contains(r.Err, "setsockopt:"):
			// One prefix, and none of mdlayher/netlink's own text
			// ("netlink join-group: setsockopt: ...").
			t.Errorf("%s without CAP_NET_ADMIN: error %q carries another library's text or a second prefix", op, r.Err)
		}
	}
	// Refusals name what was refused: the port, the group, the groups.
	if r := got["SendTo"]; !strings.Contains(r.Err, "port "+strconv.FormatUint(uint64(rx.PortID()), 10)) {
		t.Errorf("SendTo without CAP_NET_ADMIN: %q does not name the port", r.Err)
	}
	if r := got["Multicast"]; !strings.Contains(r.Err, "group "+groupNoCap.String()) {
		t.Errorf("Multicast without CAP_NET_ADMIN: %q does not name the group", r.Err)
	}
	if r := got["Dial(Groups: 21, 22, 24)"]; !strings.Contains(r.Err, "groups 21, 22 and 24") || !strings.Contains(r.Err, "22 and 24 are even-numbered") {
		t.Errorf("Dial(Groups: 21, 22, 24) without CAP_NET_ADMIN: %q does not name the groups", r.Err)
	}
	if r, ok := got["Send to the kernel"]; !ok || r.Err != "" {
		t.Errorf("Send to the kernel without CAP_NET_ADMIN: %+v, want success: it needs no privilege", r)
	}

	// Nothing the helper sent arrived: the first messages are ours.
	tx := dial(t, nil)
	id := testID()
	if err := tx.Multicast(groupNoCap, connector.Message{ID: id, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	if err := tx.SendTo(rx.PortID(), connector.Message{ID: id, Seq: 2}); err != nil {
		t.Fatal(err)
	}
	src := tiers[0].open(t, rx)
	helperID := connector.CBID{Idx: 0x1fff, Val: 0xdead} // what runNoCapHelper sends
	for seq := uint32(1); seq <= 2; {
		m, from, err := src.next()
		if err != nil {
			t.Fatal(err)
		}
		if m.ID != id && m.ID != helperID {
			continue // another test's traffic on the shared kernel
		}
		if m.ID != id || m.Seq != seq || from.Port != tx.PortID() {
			t.Fatalf("got %+v from %v, want our seq %d: the helper's message got through", m, from, seq)
		}
		seq++
	}
}

func TestIntegrationNetNS(t *testing.T) {
	requirePrivileged(t)
	ns := testutil.NewNetNS(t)
	a := dial(t, &connector.Config{NetNS: ns, Groups: []connector.Group{groupNetNS}})
	b := dial(t, &connector.Config{NetNS: ns})
	src := tiers[0].open(t, a)
	id := testID()

	err := b.Send(connector.Message{ID: id})
	errorsIsAll(t, err, connector.ErrNotInitialNetNS, syscall.ECONNREFUSED)
	mustContain(t, err, "initial network namespace")
	err = b.Send(procOp(procListen, rand.Uint32()))
	errorsIsAll(t, err, connector.ErrNotInitialNetNS)

	// An oversized message is refused before any system call: here, a
	// call would have failed with ECONNREFUSED.
	err = b.Send(connector.Message{ID: id, Data: make([]byte, connector.MaxKernelPayload+1)})
	errorsIsAll(t, err, connector.ErrMessageTooLarge)
	if errors.Is(err, connector.ErrNotInitialNetNS) {
		t.Errorf("the oversized message reached the kernel: %v", err)
	}

	// A multicast reaches the group's members before the kernel refuses
	// the copy addressed to port 0.
	err = b.Multicast(groupNetNS, connector.Message{ID: id, Seq: 1, Data: []byte("multicast")})
	errorsIsAll(t, err, connector.ErrNotInitialNetNS)
	m, from := nextWith(t, src, withID(id))
	if m.Seq != 1 || from != (connector.Sender{Port: b.PortID(), Group: groupNetNS}) {
		t.Errorf("got seq %d from %+v, want the multicast from %d on group %d", m.Seq, from, b.PortID(), groupNetNS)
	}
	// Userspace unicast works inside the namespace.
	if err := b.SendTo(a.PortID(), connector.Message{ID: id, Seq: 2, Data: []byte("unicast")}); err != nil {
		t.Fatalf("SendTo inside the namespace: %v", err)
	}
	if m, from := nextWith(t, src, withID(id)); m.Seq != 2 || from.Port != b.PortID() {
		t.Errorf("got seq %d from %+v, want the unicast", m.Seq, from)
	}
}

// TestIntegrationUnreachablePort sends to a closed socket's port, from a
// plain Conn and from a KernelWait one (whose small sends take their own
// path, sendStack).
func TestIntegrationUnreachablePort(t *testing.T) {
	requirePrivileged(t)
	for _, kw := range []bool{false, true} {
		t.Run("KernelWait="+strconv.FormatBool(kw), func(t *testing.T) { unreachablePort(t, kw) })
	}
}

func unreachablePort(t *testing.T, kernelWait bool) {
	gone, err := connector.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	// Open the sender first: a new socket may get the port id just freed.
	tx := dial(t, &connector.Config{KernelWait: kernelWait})
	port := gone.PortID()
	gone.Close()
	err = tx.SendTo(port, connector.Message{ID: testID()})
	errorsIsAll(t, err, syscall.ECONNREFUSED)
	if errors.Is(err, connector.ErrNotInitialNetNS) {
		t.Errorf("SendTo a closed port: %v matches ErrNotInitialNetNS", err)
	}
	mustContain(t, err, fmt.Sprintf("port id %d", port))
}

func TestIntegrationDeadlines(t *testing.T) {
	requirePrivileged(t)
	for _, tier := range tiers {
		t.Run(tier.name+"/read", func(t *testing.T) {
			c := dial(t, nil)
			tx := dial(t, nil)
			src := tier.open(t, c)
			if err := c.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, _, err := src.next()
			checkTimeout(t, err)
			if d := time.Since(start); d > promptly {
				t.Errorf("the read returned %v after a 50ms deadline", d)
			}
			// The zero time removes the deadline. The message is queued
			// first, so a read that still had a deadline fails instead
			// of hanging.
			id := testID()
			if err := tx.SendTo(c.PortID(), connector.Message{ID: id}); err != nil {
				t.Fatal(err)
			}
			if err := c.SetReadDeadline(time.Time{}); err != nil {
				t.Fatal(err)
			}
			nextWith(t, src, withID(id))
		})
		t.Run(tier.name+"/while blocked", func(t *testing.T) {
			c := dial(t, nil)
			if err := c.SetReadDeadline(time.Time{}); err != nil {
				t.Fatal(err)
			}
			src := tier.open(t, c)
			done := make(chan error, 1)
			go func() { _, _, err := src.next(); done <- err }()
			if !testutil.WaitFor(waitTimeout, func() bool { return ioWaiters("TestIntegrationDeadlines") >= 1 }) {
				t.Fatal("the reader did not block")
			}
			if err := c.SetReadDeadline(time.Now()); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				checkTimeout(t, err)
			case <-time.After(promptly):
				_ = c.Close()
				t.Fatalf("the blocked read ignored a new deadline for %v", promptly)
			}
		})
	}
	t.Run("write", func(t *testing.T) {
		// A unicast receiver that does not read pushes back: SendTo waits
		// for room until the write deadline, and nothing is lost.
		rx := dial(t, nil)
		if err := rx.SetReadBuffer(1); err != nil {
			t.Fatal(err)
		}
		tx := dial(t, nil)
		id := testID()
		if err := tx.SetWriteDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		sent := 0
		var err error
		for ; sent < 10000; sent++ {
			if err = tx.SendTo(rx.PortID(), connector.Message{ID: id, Seq: uint32(sent), Data: payload(256, 0)}); err != nil {
				break
			}
		}
		checkTimeout(t, err)
		if sent == 0 {
			t.Fatal("not even one message fit")
		}
		src := tiers[0].open(t, rx)
		for i := range sent {
			if m, _ := nextWith(t, src, withID(id)); m.Seq != uint32(i) {
				t.Fatalf("got seq %d, want %d", m.Seq, i)
			}
		}
		if !queueEmpty(t, rx) {
			t.Error("more messages queued than were sent successfully")
		}
		if st := rx.Stats(); st.Overruns != 0 {
			t.Errorf("Stats.Overruns = %d: unicast must push back, not drop", st.Overruns)
		}
		// With the deadline removed, sending works again.
		if err := tx.SetWriteDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
		if err := tx.SendTo(rx.PortID(), connector.Message{ID: id, Seq: uint32(sent)}); err != nil {
			t.Errorf("SendTo after removing the deadline: %v", err)
		}
	})
}

func checkTimeout(t testing.TB, err error) {
	t.Helper()
	errorsIsAll(t, err, os.ErrDeadlineExceeded)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("error %v (%T) is not a net.Error whose Timeout() is true", err, err)
	}
}

func TestIntegrationGroups(t *testing.T) {
	requirePrivileged(t)
	rx := dial(t, &connector.Config{Groups: []connector.Group{groupJoinA}})
	tx := dial(t, nil)
	src := tiers[0].open(t, rx)
	id := testID()
	wantGroups := func(want ...connector.Group) {
		t.Helper()
		got, err := rx.Groups()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("Groups() (-want +got):\n%s", diff)
		}
	}
	wantGroups(groupJoinA)
	if err := rx.JoinGroup(groupJoinB); err != nil {
		t.Fatal(err)
	}
	if err := rx.JoinGroup(connector.MaxGroup); err != nil {
		t.Fatalf("JoinGroup(%d): %v", connector.MaxGroup, err)
	}
	wantGroups(groupJoinA, groupJoinB, connector.MaxGroup)
	if err := rx.LeaveGroup(connector.MaxGroup); err != nil {
		t.Fatal(err)
	}
	if err := tx.Multicast(groupJoinB, connector.Message{ID: id, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	if m, from := nextWith(t, src, withID(id)); m.Seq != 1 || from.Group != groupJoinB {
		t.Errorf("got seq %d on group %d, want seq 1 on the joined group %d", m.Seq, from.Group, groupJoinB)
	}
	if err := rx.LeaveGroup(groupJoinA); err != nil {
		t.Fatal(err)
	}
	wantGroups(groupJoinB)
	// A multicast on the group left does not arrive; the next one on the
	// other group does.
	if err := tx.Multicast(groupJoinA, connector.Message{ID: id, Seq: 2}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Multicast(groupJoinB, connector.Message{ID: id, Seq: 3}); err != nil {
		t.Fatal(err)
	}
	if m, _ := nextWith(t, src, withID(id)); m.Seq != 3 {
		t.Errorf("got seq %d, want 3: a message on a group left was delivered", m.Seq)
	}

	for _, g := range []connector.Group{0, connector.MaxGroup + 1} {
		for name, err := range map[string]error{
			"JoinGroup":  rx.JoinGroup(g),
			"LeaveGroup": rx.LeaveGroup(g),
			"Multicast":  tx.Multicast(g, connector.Message{ID: id}),
		} {
			if !errors.Is(err, connector.ErrInvalidGroup) || !strings.Contains(fmt.Sprint(err), "1 to 32") {
				t.Errorf("%s(%d): %v, want ErrInvalidGroup saying groups are numbered 1 to 32", name, g, err)
			}
		}
		_, err := connector.Dial(&connector.Config{Groups: []connector.Group{g}})
		errorsIsAll(t, err, connector.ErrInvalidGroup)
	}
}

func TestIntegrationBuffers(t *testing.T) {
	requirePrivileged(t)
	c := dial(t, &connector.Config{ReadBufferSize: 1 << 20})
	// The kernel doubles the size it is given, for its bookkeeping.
	wantRead := func(want int) {
		t.Helper()
		if got, err := c.ReadBuffer(); err != nil || got != want {
			t.Errorf("ReadBuffer() = %d, %v; want %d", got, err, want)
		}
	}
	wantRead(2 << 20)
	if err := c.SetReadBuffer(256 << 10); err != nil {
		t.Fatal(err)
	}
	wantRead(512 << 10)
	// With CAP_NET_ADMIN the size is forced past net.core.rmem_max.
	b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		t.Fatal(err)
	}
	rmemMax, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	big := 2*rmemMax + 4096
	if err := c.SetReadBuffer(big); err != nil {
		t.Fatal(err)
	}
	wantRead(2 * big)

	if err := c.SetWriteBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
	if got, err := c.WriteBuffer(); err != nil || got != 128<<10 {
		t.Errorf("WriteBuffer() = %d, %v; want %d", got, err, 128<<10)
	}
}

func TestIntegrationBPF(t *testing.T) {
	requirePrivileged(t)
	rx := dial(t, nil)
	tx := dial(t, nil)
	src := tiers[0].open(t, rx)
	id := testID()
	// Keep datagrams whose first payload byte (offset 16+20) is 'K'. A byte
	// load is the same on every byte order.
	// The program is built with golang.org/x/net/bpf: Assemble's output
	// goes to SetBPF as it is.
	keepK, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 36, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 'K', SkipFalse: 1},
		bpf.RetConstant{Val: 0xffffffff},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rx.SetBPF(keepK); err != nil {
		t.Fatalf("SetBPF: %v", err)
	}
	send := func(seq uint32, data string) {
		t.Helper()
		if err := tx.SendTo(rx.PortID(), connector.Message{ID: id, Seq: seq, Data: []byte(data)}); err != nil {
			t.Fatal(err)
		}
	}
	send(1, "Keep")
	send(2, "Drop")
	send(3, "") // the load runs past the end: dropped
	send(4, "Keep")
	for _, want := range []uint32{1, 4} {
		if m, _ := nextWith(t, src, withID(id)); m.Seq != want {
			t.Fatalf("with the filter got seq %d %q, want seq %d", m.Seq, m.Data, want)
		}
	}
	if err := rx.RemoveBPF(); err != nil {
		t.Fatalf("RemoveBPF: %v", err)
	}
	send(5, "Drop")
	if m, _ := nextWith(t, src, withID(id)); m.Seq != 5 {
		t.Fatalf("without the filter got seq %d, want 5", m.Seq)
	}
	if !queueEmpty(t, rx) {
		t.Error("messages the filter dropped were queued")
	}

	// The kernel rejects an invalid program (a jump past the end).
	err = rx.SetBPF([]bpf.RawInstruction{{Op: unix.BPF_JMP | unix.BPF_JA, K: 10}})
	errorsIsAll(t, err, syscall.EINVAL)
	// A program longer than the kernel allows is refused, not cut short:
	// its length field is 16 bits wide, and 65537 instructions would
	// wrap to one.
	long := make([]bpf.RawInstruction, 1<<16+1)
	for i := range long {
		long[i] = bpf.RawInstruction{Op: unix.BPF_RET | unix.BPF_K, K: 0}
	}
	err = rx.SetBPF(long)
	errorsIsAll(t, err, syscall.EINVAL)
	mustContain(t, err, "4096")
	send(6, "Drop")
	if m, _ := nextWith(t, src, withID(id)); m.Seq != 6 {
		t.Fatalf("after a refused filter got seq %d, want 6", m.Seq)
	}
	// An empty filter removes the filter.
	if err := rx.SetBPF(nil); err != nil {
		t.Errorf("SetBPF(nil): %v", err)
	}
}

// TestIntegrationNetNSNotNamespace: a Config.NetNS that is no network
// namespace descriptor is refused like every other Config field out of
// range: ErrInvalidConfig, naming the field. Any user gets that answer:
// the kernel checks the descriptor before the privilege.
func TestIntegrationNetNSNotNamespace(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, fd := range []int{int(f.Fd()), 1 << 20} {
		c, err := connector.Dial(&connector.Config{NetNS: fd})
		if err == nil {
			c.Close()
			t.Errorf("Dial with Config.NetNS %d (not a namespace) succeeded", fd)
			continue
		}
		errorsIsAll(t, err, connector.ErrInvalidConfig)
		mustContain(t, err, fmt.Sprintf("Config.NetNS (fd %d)", fd))
		testutil.CheckErrorShape(t, "Dial", err, "connector")
	}
}

// TestIntegrationSendNoAgent: the kernel drops a message for an id no
// agent registered, and Send cannot tell (its documented contract); Agents
// shows the id is not registered, and Call fails at once with ErrNoAgent.
func TestIntegrationSendNoAgent(t *testing.T) {
	testutil.RequireInitialNetNS(t)
	c := testutil.Dial(t, connector.Dial, nil)
	id := testID()
	agents, err := c.Agents()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range agents {
		if a.ID == id {
			t.Fatalf("test id %v is registered by %v", id, a)
		}
	}
	if err := c.Send(connector.Message{ID: id, Seq: 1}); err != nil {
		t.Errorf("Send to %v, which no agent registered: %v, want nil (the kernel drops it silently)", id, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, _, err := connector.Call(ctx, c, connector.Message{ID: id, Seq: 2}, connector.Destination{}, connector.MatchSeqAck); !errors.Is(err, connector.ErrNoAgent) {
		t.Errorf("Call to %v: %v, want ErrNoAgent", id, err)
	}
}

// TestIntegrationBPFErrors: detaching when no filter is attached succeeds;
// the kernel's refusals say what was wrong. Attaching and detaching need
// no privilege: this runs as any user.
func TestIntegrationBPFErrors(t *testing.T) {
	c := testutil.Dial(t, connector.Dial, nil)
	for name, detach := range map[string]func() error{
		"RemoveBPF": c.RemoveBPF, "SetBPF(nil)": func() error { return c.SetBPF(nil) },
	} {
		if err := detach(); err != nil {
			t.Errorf("%s with no filter attached: %v, want success", name, err)
		}
	}
	ret := bpf.RawInstruction{Op: unix.BPF_RET | unix.BPF_K, K: 0xffffffff}
	for name, prog := range map[string][]bpf.RawInstruction{
		"a jump past the end":        {{Op: unix.BPF_JMP | unix.BPF_JA, K: 10}, ret},
		"no return at the end":       {{Op: unix.BPF_LD | unix.BPF_IMM, K: 1}},
		"a division by constant 0":   {{Op: unix.BPF_ALU | unix.BPF_DIV | unix.BPF_K, K: 0}, ret},
		"an unknown opcode":          {{Op: 0xffff}, ret},
		"a load of unwritten M[3]":   {{Op: unix.BPF_LD | unix.BPF_MEM, K: 3}, ret},
		"a scratch index past M[15]": {{Op: unix.BPF_ST, K: 16}, ret},
	} {
		err := c.SetBPF(prog)
		errorsIsAll(t, err, connector.ErrInvalidConfig, syscall.EINVAL)
		mustContain(t, err, "invalid classic BPF", fmt.Sprintf("%d-instruction", len(prog)))
		testutil.CheckErrorShape(t, "SetBPF("+name+")", err, "connector")
	}
	// A locked filter can be neither replaced nor removed.
	if err := c.SetBPF([]bpf.RawInstruction{ret}); err != nil {
		t.Fatal(err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) { lerr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_LOCK_FILTER, 1) }); err != nil || lerr != nil {
		t.Fatalf("SO_LOCK_FILTER: %v %v", err, lerr)
	}
	for name, f := range map[string]func() error{
		"RemoveBPF": c.RemoveBPF, "SetBPF": func() error { return c.SetBPF([]bpf.RawInstruction{ret}) },
	} {
		err := f()
		errorsIsAll(t, err, os.ErrPermission)
		mustContain(t, err, "SO_LOCK_FILTER")
		if strings.Contains(fmt.Sprint(err), "CAP_NET_ADMIN") {
			t.Errorf("%s on a locked filter: %q blames a capability", name, err)
		}
		testutil.CheckErrorShape(t, name+" on a locked filter", err, "connector")
	}
}

func TestIntegrationSyscallConn(t *testing.T) {
	requirePrivileged(t)
	c := dial(t, nil)
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var proto, domain int
	var sa unix.Sockaddr
	var e1, e2, e3 error
	if err := rc.Control(func(fd uintptr) {
		proto, e1 = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL)
		domain, e2 = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		sa, e3 = unix.Getsockname(int(fd))
	}); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(e1, e2, e3); err != nil {
		t.Fatal(err)
	}
	if proto != connector.Protocol || domain != unix.AF_NETLINK {
		t.Errorf("socket domain %d protocol %d, want AF_NETLINK (%d) NETLINK_CONNECTOR (%d)", domain, proto, unix.AF_NETLINK, connector.Protocol)
	}
	if nl, ok := sa.(*unix.SockaddrNetlink); !ok || nl.Pid != c.PortID() {
		t.Errorf("getsockname = %+v, want port id %d", sa, c.PortID())
	}
}
