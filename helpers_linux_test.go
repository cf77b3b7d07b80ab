package connector_test

// Helpers shared by the root package's real-kernel tests and benchmarks:
// TestMain with the helper processes, dialing, the two receive tiers behind
// one interface, a raw-socket peer, and the proc connector's LISTEN/ack.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/testutil"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	testutil.Main(m, map[string]testutil.HelperFunc{
		helperNoCap: runNoCapHelper,
	})
}

// waitTimeout bounds every wait for a message or an event. Generous: the
// tests also run under qemu without acceleration.
const waitTimeout = 10 * time.Second

// promptly is how soon an operation that must not block (Close waking a
// reader, a past deadline) has to finish.
const promptly = 3 * time.Second

// requirePrivileged skips unless the test can do everything the
// integration tests do: talk to the kernel side of the connector (initial
// network namespace) and message userspace ports and groups (CAP_NET_ADMIN).
func requirePrivileged(t testing.TB) {
	t.Helper()
	testutil.RequireInitialNetNS(t)
	testutil.RequireCapability(t, unix.CAP_NET_ADMIN, "CAP_NET_ADMIN")
}

// dial opens a Conn closed when the test ends, with a read deadline of
// waitTimeout so that a bug fails the test instead of hanging it.
func dial(t testing.TB, cfg *connector.Config) *connector.Conn {
	t.Helper()
	c := testutil.Dial(t, connector.Dial, cfg)
	if err := c.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	return c
}

// testID returns a callback id that no kernel agent registers and that
// differs between tests, so that stray traffic from other tests (or other
// test binaries running at the same time) is recognisable.
func testID() connector.CBID {
	return connector.CBID{Idx: 0x1000 + rand.Uint32N(0x1000), Val: rand.Uint32()}
}

// payload returns n bytes that differ with n and salt.
func payload(n int, salt byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + salt
	}
	return b
}

// A source is one of the two receive tiers, yielding one message at a time.
// Messages from Reader.Next are copied, so they stay valid.
type source interface {
	next() (connector.Message, connector.Sender, error)
}

type readerSource struct{ r *connector.Reader }

func (s readerSource) next() (connector.Message, connector.Sender, error) {
	m, from, err := s.r.Next()
	m.Data = bytes.Clone(m.Data)
	return m, from, err
}

type receiveSource struct {
	c       *connector.Conn
	pending []connector.Message
	from    connector.Sender
	err     error
}

func (s *receiveSource) next() (connector.Message, connector.Sender, error) {
	for {
		if len(s.pending) > 0 {
			m := s.pending[0]
			s.pending = s.pending[1:]
			return m, s.from, nil
		}
		if s.err != nil {
			err := s.err
			s.err = nil
			return connector.Message{}, s.from, err
		}
		msgs, from, err := s.c.Receive()
		if err == nil && len(msgs) == 0 {
			return connector.Message{}, from, errors.New("Receive returned no messages and no error")
		}
		s.pending, s.from, s.err = msgs, from, err
	}
}

// tiers are the two receive paths every receive test runs through.
var tiers = []struct {
	name string
	open func(t testing.TB, c *connector.Conn) source
}{
	{"Reader", func(t testing.TB, c *connector.Conn) source {
		r := c.NewReader()
		t.Cleanup(r.Release)
		return readerSource{r}
	}},
	{"Receive", func(_ testing.TB, c *connector.Conn) source { return &receiveSource{c: c} }},
}

// nextWith returns the next message for which keep returns true, failing
// the test on any error. Other messages are skipped.
func nextWith(t testing.TB, src source, keep func(connector.Message, connector.Sender) bool) (connector.Message, connector.Sender) {
	t.Helper()
	for {
		m, from, err := src.next()
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if keep(m, from) {
			return m, from
		}
	}
}

// withID keeps the messages of one test.
func withID(id connector.CBID) func(connector.Message, connector.Sender) bool {
	return func(m connector.Message, _ connector.Sender) bool { return m.ID == id }
}

// nextErr returns the next error from src, failing the test if a message of
// this test (id) arrives first.
func nextErr(t testing.TB, src source, id connector.CBID) (connector.Sender, error) {
	t.Helper()
	for {
		m, from, err := src.next()
		if err != nil {
			return from, err
		}
		if m.ID == id {
			t.Fatalf("got message seq %d (%d bytes) from %v, want an error first", m.Seq, len(m.Data), from)
		}
	}
}

// queueEmpty reports whether c's receive queue is empty, without taking a
// pending overrun report from it (testutil.QueueEmpty).
func queueEmpty(t testing.TB, c *connector.Conn) bool {
	t.Helper()
	return testutil.QueueEmpty(t, c)
}

// A rawPeer is a NETLINK_CONNECTOR socket made with plain system calls, for
// sending bytes the package would never produce.
type rawPeer struct {
	fd   int
	port uint32
}

func newRawPeer(t testing.TB) *rawPeer {
	t.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, connector.Protocol)
	if err != nil {
		t.Fatalf("raw socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatalf("raw bind: %v", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatalf("raw getsockname: %v", err)
	}
	return &rawPeer{fd: fd, port: sa.(*unix.SockaddrNetlink).Pid}
}

func (p *rawPeer) sendTo(t testing.TB, port uint32, b []byte) {
	t.Helper()
	if err := unix.Sendto(p.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: port}); err != nil {
		t.Fatalf("raw sendto port %d (%d bytes): %v", port, len(b), err)
	}
}

// nlmsg builds a netlink message holding body, with nlmsg_len given
// explicitly (-1 means the true length). It is not padded.
func nlmsg(nlLen int, body []byte) []byte {
	if nlLen < 0 {
		nlLen = 16 + len(body)
	}
	b := binary.NativeEndian.AppendUint32(nil, uint32(nlLen))
	b = binary.NativeEndian.AppendUint16(b, 3) // NLMSG_DONE
	b = binary.NativeEndian.AppendUint16(b, 0)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = binary.NativeEndian.AppendUint32(b, 0)
	return append(b, body...)
}

// cnmsg builds a cn_msg with the len field given explicitly (-1 means the
// true length).
func cnmsg(id connector.CBID, seq uint32, cnLen int, data []byte) []byte {
	if cnLen < 0 {
		cnLen = len(data)
	}
	b := binary.NativeEndian.AppendUint32(nil, id.Idx)
	b = binary.NativeEndian.AppendUint32(b, id.Val)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = binary.NativeEndian.AppendUint16(b, uint16(cnLen))
	b = binary.NativeEndian.AppendUint16(b, 0)
	return append(b, data...)
}

// Proc connector (include/uapi/linux/cn_proc.h).
const (
	procListen = 1 // PROC_CN_MCAST_LISTEN
	procIgnore = 2 // PROC_CN_MCAST_IGNORE
)

func procOp(op uint32, ack uint32) connector.Message {
	return connector.Message{ID: connector.IDProc, Ack: ack, Data: binary.NativeEndian.AppendUint32(nil, op)}
}

// isProcAck reports whether m is the proc connector's reply to the request
// sent with ack: what == PROC_EVENT_NONE and cn_msg.ack == ack+1, from the
// kernel on group 1. The seq is the kernel's own and is not compared.
func isProcAck(m connector.Message, from connector.Sender, ack uint32) bool {
	return m.ID == connector.IDProc && from.Kernel() && from.Group == 1 &&
		len(m.Data) >= 20 && binary.NativeEndian.Uint32(m.Data[0:4]) == 0 && m.Ack == ack+1
}

// procListenAck subscribes c (which must be a member of group 1) to process
// events and waits for the kernel's ack, a real kernel message, reading c
// through src; it survives receive overruns (testutil.ProcListenAck) and
// sends IGNORE when the test ends. Other clients' acks and events are
// skipped.
func procListenAck(t testing.TB, c *connector.Conn, src source) (connector.Message, connector.Sender) {
	t.Helper()
	var ack connector.Message
	var ackFrom connector.Sender
	testutil.ProcListenAck(t, testutil.ProcListen{
		Try: func(ctx context.Context, p testutil.ProcTry) (bool, error) {
			// A read ends with the try (dial's deadline is set again below).
			if d, ok := ctx.Deadline(); ok {
				if err := c.SetReadDeadline(d); err != nil {
					t.Fatalf("SetReadDeadline: %v", err)
				}
			}
			// After an overrun the kernel drops everything until the
			// queue has been read empty: read it empty first.
			for p.Retry && !queueEmpty(t, c) {
				if _, _, err := src.next(); err != nil && !errors.Is(err, connector.ErrOverrun) {
					return false, err
				}
			}
			if err := c.Send(procOp(procListen, p.Ack)); err != nil {
				t.Fatalf("sending PROC_CN_MCAST_LISTEN: %v", err)
			}
			for ctx.Err() == nil {
				m, from, err := src.next()
				if err != nil {
					return true, err
				}
				if isProcAckOf(m, from, p.Ours) {
					ack, ackFrom = m, from
					return true, nil
				}
			}
			return true, ctx.Err()
		},
		Overruns: func() uint64 { return c.Stats().Overruns },
		Ignore:   func() error { return c.Send(procOp(procIgnore, rand.Uint32())) },
	})
	if err := c.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	if e := binary.NativeEndian.Uint32(ack.Data[16:20]); e != 0 {
		t.Fatalf("proc connector refused LISTEN: err %d (%v)", e, unix.Errno(e))
	}
	return ack, ackFrom
}

// isProcAckOf is isProcAck for any request whose ack ours accepts.
func isProcAckOf(m connector.Message, from connector.Sender, ours func(replyAck uint32) bool) bool {
	return m.ID == connector.IDProc && from.Kernel() && from.Group == 1 &&
		len(m.Data) >= 20 && binary.NativeEndian.Uint32(m.Data[0:4]) == 0 && ours(m.Ack)
}

// ioWaiters returns how many goroutines with fn in their stack are blocked
// reading a socket: parked in the poller, or queued behind another reader of
// the same socket. That is proof that they are really blocked, not about to
// be.
func ioWaiters(fn string) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if (strings.Contains(g, "[IO wait") || strings.Contains(g, "[semacquire")) &&
			strings.Contains(g, "poll.(*FD).RawRead") && strings.Contains(g, fn) {
			n++
		}
	}
	return n
}
