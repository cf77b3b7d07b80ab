package connector_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/testutil"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/bpf"
)

// These tests run the Conn over the cntest fake kernel: they need no
// privileges and run on every system. The integration tests
// (conn_linux_integration_test.go) cover the real kernel.

// fakeWait bounds every blocking call on a fake Conn, so that a bug fails a
// test instead of hanging it.
const fakeWait = 5 * time.Second

// dialFake opens a Conn on the fake kernel, closed when the test ends.
func dialFake(t testing.TB, k *cntest.Kernel, cfg *connector.Config) *connector.Conn {
	t.Helper()
	return testutil.Dial(t, k.Dial, cfg)
}

// receiveFake reads one datagram's messages, failing the test after
// fakeWait.
func receiveFake(t testing.TB, c *connector.Conn) ([]connector.Message, connector.Sender) {
	t.Helper()
	return testutil.Receive(t, c, fakeWait)
}

var cmpBytes = cmp.Comparer(func(a, b []byte) bool { return bytes.Equal(a, b) })

func TestSendEncoding(t *testing.T) {
	k := cntest.New(nil)
	c := dialFake(t, k, nil)
	for _, n := range []int{0, 1, 3, 4, 40, 1001, connector.MaxKernelPayload} {
		m := connector.Message{ID: connector.CBID{Idx: 14, Val: 0x456}, Seq: uint32(n) + 1, Ack: 0xabcdef, Flags: 0x8001, Data: bytes.Repeat([]byte{0x42}, n)}
		if err := c.Send(m); err != nil {
			t.Fatalf("Send of %d payload bytes: %v", n, err)
		}
		reqs := k.Requests()
		if len(reqs) == 0 {
			t.Fatalf("Send of %d payload bytes: the kernel got nothing (rejected: %+v)", n, k.Rejected())
		}
		r := reqs[len(reqs)-1]
		if diff := cmp.Diff(m, r.Message, cmpBytes); diff != "" {
			t.Errorf("%d bytes: message as the kernel decoded it (-sent +got):\n%s", n, diff)
		}
		want := cntest.NetlinkHeader{Len: uint32(36 + n), Type: cntest.TypeDone, Flags: 0, Seq: m.Seq, PID: c.PortID()}
		if r.Header != want {
			t.Errorf("%d bytes: netlink header %+v, want %+v", n, r.Header, want)
		}
		if len(r.Raw) != 36+n {
			t.Errorf("%d bytes: datagram of %d bytes, want %d", n, len(r.Raw), 36+n)
		}
		if r.From != (connector.Sender{Port: c.PortID()}) {
			t.Errorf("%d bytes: sent from %+v", n, r.From)
		}
	}
	if rej := k.Rejected(); len(rej) != 0 {
		t.Errorf("the kernel would have dropped: %+v", rej)
	}
}

func TestSendSizeLimits(t *testing.T) {
	k := cntest.New(nil)
	a, b := dialFake(t, k, nil), dialFake(t, k, nil)
	big := connector.Message{ID: connector.IDProc, Data: make([]byte, connector.MaxKernelPayload+1)}
	err := a.Send(big)
	if !errors.Is(err, connector.ErrMessageTooLarge) || !strings.Contains(err.Error(), "16365") {
		t.Errorf("Send of %d bytes: %v, want ErrMessageTooLarge naming the size", len(big.Data), err)
	}
	if n := len(k.Requests()) + len(k.Rejected()); n != 0 {
		t.Errorf("an oversized Send reached the kernel (%d datagrams)", n)
	}
	// Userspace peers take up to CONNECTOR_MAX_MSG_SIZE.
	peer := connector.Message{ID: connector.CBID{Idx: 20}, Data: bytes.Repeat([]byte{7}, connector.MaxMessageSize)}
	if err := a.SendTo(b.PortID(), peer); err != nil {
		t.Fatalf("SendTo of %d bytes: %v", connector.MaxMessageSize, err)
	}
	msgs, _ := receiveFake(t, b)
	if len(msgs) != 1 || !bytes.Equal(msgs[0].Data, peer.Data) {
		t.Error("the largest peer message did not arrive intact")
	}
	peer.Data = append(peer.Data, 7)
	if err := a.SendTo(b.PortID(), peer); !errors.Is(err, connector.ErrMessageTooLarge) {
		t.Errorf("SendTo of %d bytes: %v, want ErrMessageTooLarge", len(peer.Data), err)
	}
	if err := a.Multicast(20, peer); !errors.Is(err, connector.ErrMessageTooLarge) {
		t.Errorf("Multicast of %d bytes: %v, want ErrMessageTooLarge", len(peer.Data), err)
	}
}

// TestZeroDestinations: port 0 and group 0 name no socket. SendTo(0),
// ToPort(0) and ToGroup(0) fail with an error that says so and what to use
// for the kernel, and send nothing (they went to the kernel); the zero
// Destination is the kernel.
func TestZeroDestinations(t *testing.T) {
	k := cntest.New(nil)
	var got int
	k.Handle(idA, func(connector.Message, connector.Sender) []cntest.Reply { got++; return nil })
	c := dialFake(t, k, nil)
	m := connector.Message{ID: idA, Data: []byte{1, 0, 0, 0}}
	err := c.SendTo(0, m)
	if !errors.Is(err, connector.ErrInvalidDestination) || !strings.Contains(err.Error(), "use Send") {
		t.Errorf("SendTo(0): %v, want ErrInvalidDestination saying to use Send", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	for _, c2 := range []struct {
		to   connector.Destination
		want error
		str  string
		says string
	}{
		{connector.ToPort(0), connector.ErrInvalidDestination, "port 0", "Destination{}"},
		{connector.ToGroup(0), connector.ErrInvalidGroup, "group 0", "Destination{}"},
		{connector.ToGroup(40), connector.ErrInvalidGroup, "group 40", "1 to 32"},
		{connector.Destination{Port: 1, Group: 20}, connector.ErrInvalidDestination, "group 20", "set one"},
	} {
		if c2.to.Kernel() || c2.to.String() != c2.str {
			t.Errorf("%v: Kernel() = %v, String() = %q; want false, %q", c2.to, c2.to.Kernel(), c2.to.String(), c2.str)
		}
		_, _, err := connector.Call(ctx, c, m, c2.to, connector.MatchSeqAck)
		if !errors.Is(err, c2.want) || !strings.Contains(err.Error(), c2.says) {
			t.Errorf("Call to %v: %v, want %v saying %q", c2.to, err, c2.want, c2.says)
		}
		if errors.Is(err, connector.ErrNoAgent) {
			t.Errorf("Call to %v went to the kernel: %v", c2.to, err)
		}
	}
	if got != 0 || len(k.Requests()) != 0 {
		t.Errorf("the kernel got %d requests (%d handled), want none", len(k.Requests()), got)
	}
	// A field set afterwards wins over ToPort(0)'s mark.
	to := connector.ToPort(0)
	to.Port = 7
	if to.Kernel() || to.String() != "port 7" {
		t.Errorf("ToPort(0) with Port set to 7: Kernel() %v, String() %q", to.Kernel(), to.String())
	}
	if !(connector.Destination{}).Kernel() || connector.ToPort(7) != (connector.Destination{Port: 7}) || connector.ToGroup(12) != (connector.Destination{Group: 12}) {
		t.Error("the zero Destination is not the kernel, or ToPort/ToGroup of a valid value differ from the literal")
	}
}

func TestMulticastInvalidGroup(t *testing.T) {
	k := cntest.New(nil)
	c := dialFake(t, k, nil)
	for _, g := range []connector.Group{0, 33} {
		err := c.Multicast(g, connector.Message{})
		var oe *connector.OpError
		if !errors.Is(err, connector.ErrInvalidGroup) || !errors.As(err, &oe) || oe.Op != "multicast" {
			t.Errorf("Multicast(%d) = %v, want ErrInvalidGroup from op multicast", g, err)
		}
	}
	if n := len(k.Requests()); n != 0 {
		t.Errorf("invalid multicasts reached the kernel: %d", n)
	}
}

func TestSendErrorsSayWhatToDo(t *testing.T) {
	k := cntest.New(nil)
	c := dialFake(t, k, nil)
	err := c.SendTo(424242, connector.Message{})
	if !errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, connector.ErrNotInitialNetNS) || !strings.Contains(err.Error(), "424242") {
		t.Errorf("SendTo a missing port: %v; want ECONNREFUSED naming the port, not ErrNotInitialNetNS", err)
	}
	u, err := k.DialUnprivileged(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	err = u.SendTo(c.PortID(), connector.Message{})
	if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Errorf("unprivileged SendTo: %v; want os.ErrPermission naming CAP_NET_ADMIN", err)
	}
	if _, err := k.DialUnprivileged(&connector.Config{Groups: []connector.Group{2}}); !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Errorf("unprivileged Dial to group 2: %v; want os.ErrPermission naming CAP_NET_ADMIN", err)
	}

	ns := cntest.New(&cntest.Options{NotInitialNetNS: true})
	nc := dialFake(t, ns, nil)
	err = nc.Send(connector.Message{ID: connector.IDProc})
	if !errors.Is(err, connector.ErrNotInitialNetNS) || !strings.Contains(err.Error(), "initial network namespace") {
		t.Errorf("Send outside the initial network namespace: %v", err)
	}
}

func TestWriteDeadline(t *testing.T) {
	k := cntest.New(&cntest.Options{QueueLen: 1})
	a, b := dialFake(t, k, nil), dialFake(t, k, nil)
	if err := a.SendTo(b.PortID(), connector.Message{Seq: 1}); err != nil {
		t.Fatal(err)
	}
	if err := a.SetDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	err := a.SendTo(b.PortID(), connector.Message{Seq: 2})
	var oe *connector.OpError
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &oe) || !oe.Timeout() {
		t.Fatalf("SendTo a full receiver past the deadline: %v, want a timeout", err)
	}
	// Without a deadline the send waits; Close ends the wait.
	if err := a.SetWriteDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	refused := k.Refused(b.PortID())
	done := make(chan error, 1)
	go func() { done <- a.SendTo(b.PortID(), connector.Message{Seq: 3}) }()
	if !k.WaitRefused(b.PortID(), refused, fakeWait) {
		t.Fatal("the send never reached the full receiver")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	awaitErr(t, done, fakeWait, connector.ErrClosed, "SendTo ended by Close")
	if q := k.Queued(b.PortID()); q != 1 {
		t.Errorf("receiver has %d datagrams, want only the first", q)
	}
}

func TestCallsAfterClose(t *testing.T) {
	k := cntest.New(nil)
	c, err := k.Dial(&connector.Config{Groups: []connector.Group{1}})
	if err != nil {
		t.Fatal(err)
	}
	r := c.NewReader()
	defer r.Release()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	calls := map[string]func() error{
		"Close":            c.Close,
		"Send":             func() error { return c.Send(connector.Message{}) },
		"SendTo":           func() error { return c.SendTo(5, connector.Message{}) },
		"Multicast":        func() error { return c.Multicast(20, connector.Message{}) },
		"JoinGroup":        func() error { return c.JoinGroup(3) },
		"LeaveGroup":       func() error { return c.LeaveGroup(1) },
		"Groups":           func() error { _, err := c.Groups(); return err },
		"Receive":          func() error { _, _, err := c.Receive(); return err },
		"Reader.Next":      func() error { _, _, err := r.Next(); return err },
		"NewReader.Next":   func() error { r := c.NewReader(); defer r.Release(); _, _, err := r.Next(); return err },
		"SetReadBuffer":    func() error { return c.SetReadBuffer(1 << 20) },
		"ReadBuffer":       func() error { _, err := c.ReadBuffer(); return err },
		"SetWriteBuffer":   func() error { return c.SetWriteBuffer(1 << 20) },
		"WriteBuffer":      func() error { _, err := c.WriteBuffer(); return err },
		"SetNoENOBUFS":     func() error { return c.SetNoENOBUFS(true) },
		"SetBPF":           func() error { return c.SetBPF(nil) },
		"RemoveBPF":        c.RemoveBPF,
		"SyscallConn":      func() error { _, err := c.SyscallConn(); return err },
		"SetDeadline":      func() error { return c.SetDeadline(time.Now()) },
		"SetReadDeadline":  func() error { return c.SetReadDeadline(time.Now()) },
		"SetWriteDeadline": func() error { return c.SetWriteDeadline(time.Now()) },
	}
	for name, call := range calls {
		err := call()
		if !errors.Is(err, connector.ErrClosed) || !errors.Is(err, os.ErrClosed) || !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed (also matching os.ErrClosed and net.ErrClosed)", name, err)
		}
		var oe *connector.OpError
		if !errors.As(err, &oe) || oe.Op == "" {
			t.Errorf("%s after Close: %v is not an *OpError naming the operation", name, err)
		}
	}
	if len(k.Ports()) != 0 {
		t.Errorf("the fake socket is still open after Close: %v", k.Ports())
	}
}

func TestNotSupportedByFake(t *testing.T) {
	k := cntest.New(nil)
	c := dialFake(t, k, nil)
	if err := c.SetBPF([]bpf.RawInstruction{{Op: 0x6, K: 0xffffffff}}); !errors.Is(err, connector.ErrNotSupported) {
		t.Errorf("SetBPF = %v, want ErrNotSupported", err)
	}
	if err := c.RemoveBPF(); !errors.Is(err, connector.ErrNotSupported) {
		t.Errorf("RemoveBPF = %v, want ErrNotSupported", err)
	}
	if _, err := c.SyscallConn(); !errors.Is(err, connector.ErrNotSupported) || !strings.Contains(err.Error(), "syscall conn") {
		t.Errorf("SyscallConn = %v, want ErrNotSupported naming the operation", err)
	}
}

func TestConfigDefaultsAndCopies(t *testing.T) {
	k := cntest.New(nil)
	gs := []connector.Group{1, 3}
	c := dialFake(t, k, &connector.Config{Groups: gs, Senders: connector.SendersKernelOnly})
	gs[0] = 7 // the Conn keeps its own copy
	cfg := c.Config()
	if cfg.MessageBufferSize != connector.DefaultMessageBufferSize || cfg.BatchSize != connector.DefaultBatchSize || cfg.Senders != connector.SendersKernelOnly {
		t.Errorf("Config() = %+v, want defaults filled in and Senders kept", cfg)
	}
	if diff := cmp.Diff([]connector.Group{1, 3}, cfg.Groups); diff != "" {
		t.Errorf("Config().Groups (-want +got):\n%s", diff)
	}
	cfg.Groups[0] = 9
	if c.Config().Groups[0] != 1 {
		t.Error("modifying the returned Config changed the Conn's")
	}
	// The smallest buffer holds the two headers.
	small := dialFake(t, k, &connector.Config{MessageBufferSize: connector.MinMessageBufferSize})
	if n := small.Config().MessageBufferSize; n != 36 {
		t.Errorf("MessageBufferSize %d became %d", connector.MinMessageBufferSize, n)
	}
	if p := dialFake(t, k, nil).PortID(); p == 0 {
		t.Error("a Conn has port id 0, the kernel's")
	}
}

func TestReceiveReturnsOwnedCopies(t *testing.T) {
	k := cntest.New(nil)
	c := dialFake(t, k, &connector.Config{Groups: []connector.Group{3}})
	one, _ := cntest.Bundle(
		connector.Message{ID: connector.IDW1, Seq: 1, Data: []byte("first")},
		connector.Message{ID: connector.IDW1, Seq: 2, Data: []byte("second")},
	)
	two := cntest.MustDatagram(connector.Message{ID: connector.IDW1, Seq: 3, Data: []byte("XXXXXXXXXXXXXXXX")})
	for _, d := range [][]byte{one, two} {
		if err := k.InjectRaw(c.PortID(), connector.Sender{Group: 3}, d); err != nil {
			t.Fatal(err)
		}
	}
	first, from := receiveFake(t, c)
	if len(first) != 2 || from != (connector.Sender{Group: 3}) {
		t.Fatalf("Receive = %+v from %+v, want the two bundled messages", first, from)
	}
	// The next Receive reuses the Conn's buffer; the first result must not
	// change.
	second, _ := receiveFake(t, c)
	if string(first[0].Data) != "first" || string(first[1].Data) != "second" || string(second[0].Data) != "XXXXXXXXXXXXXXXX" {
		t.Errorf("messages changed after the next Receive: %q %q", first[0].Data, first[1].Data)
	}
	_ = append(first[0].Data, "!!!!!!!!"...)
	if string(first[1].Data) != "second" || first[1].Seq != 2 {
		t.Error("appending to one message's Data overwrote the next message")
	}
}

func TestReceiveSkipsForeignAndCounts(t *testing.T) {
	k := cntest.New(nil)
	c := dialFake(t, k, &connector.Config{Groups: []connector.Group{1}})
	spoof := cntest.MustDatagram(connector.Message{ID: connector.IDProc, Data: []byte("fake")})
	if err := k.InjectRaw(c.PortID(), connector.Sender{Port: 666, Group: 1}, spoof); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Multicast(1, connector.Message{ID: connector.IDProc, Data: []byte("real")}); err != nil {
		t.Fatal(err)
	}
	msgs, from := receiveFake(t, c)
	if string(msgs[0].Data) != "real" || !from.Kernel() {
		t.Errorf("Receive = %q from %v, want the kernel's message", msgs[0].Data, from)
	}
	if s := c.Stats(); s.Foreign != 1 || s.Datagrams != 2 || s.Messages != 1 {
		t.Errorf("Stats = %+v, want 1 foreign of 2 datagrams, 1 message", s)
	}
}

func TestSenderString(t *testing.T) {
	tests := []struct {
		s    connector.Sender
		want string
	}{
		{connector.Sender{}, "kernel"},
		{connector.Sender{Group: 1}, "kernel on group 1"},
		{connector.Sender{Port: 1234}, "port 1234"},
		{connector.Sender{Port: 4294967295, Group: 32}, "port 4294967295 on group 32"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.s, got, tt.want)
		}
		if tt.s.Kernel() != (tt.s.Port == 0) {
			t.Errorf("%+v.Kernel() = %v", tt.s, tt.s.Kernel())
		}
	}
}

func TestReceiveMalformedTail(t *testing.T) {
	k := cntest.New(nil)
	c := dialFake(t, k, &connector.Config{Groups: []connector.Group{3}})
	good := cntest.MustDatagram(connector.Message{ID: connector.IDW1, Seq: 1, Data: []byte("ok")})
	inject := func(d []byte) {
		t.Helper()
		if err := k.InjectRaw(c.PortID(), connector.Sender{Group: 3}, d); err != nil {
			t.Fatal(err)
		}
	}
	inject(append(append([]byte(nil), good...), 0xde, 0xad, 0xbe, 0xef, 0x01))
	inject(cntest.MustDatagram(connector.Message{ID: connector.IDW1, Seq: 2}))
	_ = c.SetReadDeadline(time.Now().Add(fakeWait))
	// The valid message comes with the error, as with io.Reader.
	msgs, from, err := c.Receive()
	if !errors.Is(err, connector.ErrMalformed) || !strings.Contains(err.Error(), "5 bytes are too short") {
		t.Errorf("Receive error = %v, want ErrMalformed naming the 5 stray bytes", err)
	}
	if len(msgs) != 1 || msgs[0].Seq != 1 || string(msgs[0].Data) != "ok" || from != (connector.Sender{Group: 3}) {
		t.Errorf("Receive = %+v from %+v, want the valid message before the bad bytes", msgs, from)
	}
	if msgs, _ := receiveFake(t, c); len(msgs) != 1 || msgs[0].Seq != 2 {
		t.Errorf("next Receive = %+v", msgs)
	}
	if s := c.Stats(); s.Malformed != 1 || s.Messages != 2 {
		t.Errorf("Stats = %+v, want 1 malformed and 2 messages", s)
	}
}

func TestSenderPolicy(t *testing.T) {
	kernel := connector.Sender{}
	kernelG20 := connector.Sender{Group: 20}
	user := func(port uint32, g connector.Group) connector.Sender { return connector.Sender{Port: port, Group: g} }
	tests := []struct {
		p    connector.SenderPolicy
		from connector.Sender
		want bool
	}{
		{connector.SendersDefault, kernel, true},
		{connector.SendersDefault, kernelG20, true},
		{connector.SendersDefault, user(9, 1), false},
		{connector.SendersDefault, user(9, 10), false},
		{connector.SendersDefault, user(9, 11), true},
		{connector.SendersDefault, user(9, 0), true},
		{connector.SendersKernelOnly, kernel, true},
		{connector.SendersKernelOnly, kernelG20, true},
		{connector.SendersKernelOnly, user(9, 11), false},
		{connector.SendersKernelOnly, user(9, 0), false},
		{connector.SendersAny, user(9, 1), true},
		{connector.SendersAny, user(9, 0), true},
		{connector.SendersAny, kernel, true},
	}
	for _, tt := range tests {
		if got := tt.p.Accepts(tt.from); got != tt.want {
			t.Errorf("%v.Accepts(%v) = %v, want %v", tt.p, tt.from, got, tt.want)
		}
	}
	if s := connector.SenderPolicy(7).String(); s != "SenderPolicy(7)" {
		t.Errorf("String of an unknown policy = %q", s)
	}
}

func TestInvalidSenderPolicy(t *testing.T) {
	for _, p := range []connector.SenderPolicy{-1, 3} {
		_, err := cntest.New(nil).Dial(&connector.Config{Senders: p})
		errorsIsAll(t, err, connector.ErrInvalidConfig)
		mustContain(t, err, "Config.Senders", "SendersKernelOnly")
		_, err = connector.Dial(&connector.Config{Senders: p})
		errorsIsAll(t, err, connector.ErrInvalidConfig)
	}
}

// TestConfigRanges: every size and count in a Config is range-checked by
// Dial, on the real socket and the fake alike, with an error that names the
// field; the limits themselves are accepted.
func TestConfigRanges(t *testing.T) {
	bad := []struct {
		cfg   connector.Config
		field string
	}{
		{connector.Config{ReadBufferSize: -1}, "Config.ReadBufferSize"},
		{connector.Config{MessageBufferSize: -1}, "Config.MessageBufferSize"},
		{connector.Config{MessageBufferSize: connector.MinMessageBufferSize - 1}, "Config.MessageBufferSize"},
		{connector.Config{BatchSize: -1}, "Config.BatchSize"},
		{connector.Config{BatchSize: connector.MaxBatchSize + 1}, "UIO_MAXIOV"},
		{connector.Config{MessageBufferSize: 1 << 30, BatchSize: 1000}, "MaxBatchBytes"},
		{connector.Config{MessageBufferSize: connector.MaxBatchBytes + 1}, "MaxBatchBytes"},
		{connector.Config{MessageBufferSize: connector.MaxBatchBytes/connector.MaxBatchSize + 1, BatchSize: connector.MaxBatchSize}, "MaxBatchBytes"},
		{connector.Config{NetNS: -1}, "Config.NetNS"},
		{connector.Config{Groups: []connector.Group{0}}, "Config.Groups[0]"},
		{connector.Config{Groups: []connector.Group{1, connector.MaxGroup + 1}}, "Config.Groups[1]"},
		{connector.Config{RawWait: true}, "Config.RawWait"},
		{connector.Config{Senders: -1}, "Config.Senders"},
	}
	if math.MaxInt > math.MaxInt32 {
		big := uint64(1) << 31 // the 1<<31, written to compile on 32-bit systems
		bad = append(bad, struct {
			cfg   connector.Config
			field string
		}{connector.Config{ReadBufferSize: int(big)}, "Config.ReadBufferSize"})
		// The MessageBufferSize 1<<30 with BatchSize 100000: an
		// error, not an out-of-memory crash in NewReader.
		bad = append(bad, struct {
			cfg   connector.Config
			field string
		}{connector.Config{MessageBufferSize: 1 << 30, BatchSize: 100000}, "Config.BatchSize"})
	}
	for _, tt := range bad {
		for name, dial := range map[string]func(*connector.Config) (*connector.Conn, error){
			"Dial": connector.Dial, "cntest": cntest.New(nil).Dial,
		} {
			cfg := tt.cfg
			c, err := dial(&cfg)
			if err == nil {
				_ = c.Close()
				t.Errorf("%s(%+v) succeeded", name, cfg)
				continue
			}
			errorsIsAll(t, err, connector.ErrInvalidConfig)
			if len(tt.cfg.Groups) != 0 {
				errorsIsAll(t, err, connector.ErrInvalidGroup)
			}
			mustContain(t, err, tt.field)
			testutil.CheckErrorShape(t, name, err, "connector")
			if strings.Count(err.Error(), "connector:") != 1 {
				t.Errorf("%s: error %q does not carry exactly one prefix", name, err)
			}
		}
	}
	// Every field of Config has a row above, unless no value of it is out
	// of range: a field added later without a check fails here.
	noBadValue := map[string]bool{"NoENOBUFS": true, "KernelWait": true}
	ct := reflect.TypeFor[connector.Config]()
	for i := range ct.NumField() {
		f := ct.Field(i)
		if !f.IsExported() || noBadValue[f.Name] {
			continue
		}
		found := false
		for _, tt := range bad {
			found = found || strings.HasPrefix(tt.field, "Config."+f.Name)
		}
		if !found {
			t.Errorf("Config.%s has no out-of-range row in this test", f.Name)
		}
	}
	k := cntest.New(nil)
	for _, cfg := range []connector.Config{
		{MessageBufferSize: connector.MaxBatchBytes / connector.MaxBatchSize, BatchSize: connector.MaxBatchSize},
		{MessageBufferSize: connector.MaxBatchBytes, BatchSize: 1},
		{ReadBufferSize: connector.MaxBufferSize},
	} {
		c := dialFake(t, k, &cfg)
		r := c.NewReader() // allocates the batch: must not fail
		r.Release()
	}
}

// TestSetterRanges: the buffer setters refuse sizes the kernel's int cannot
// hold instead of passing them on cut to 32 bits.
func TestSetterRanges(t *testing.T) {
	c := dialFake(t, cntest.New(nil), nil)
	for _, n := range []int{-1, math.MinInt32} {
		errorsIsAll(t, c.SetReadBuffer(n), connector.ErrInvalidConfig)
		errorsIsAll(t, c.SetWriteBuffer(n), connector.ErrInvalidConfig)
	}
	if err := c.SetReadBuffer(0); err != nil {
		t.Errorf("SetReadBuffer(0) = %v, want the kernel's minimum", err)
	}
}

// TestSentinels: the sentinels are plain errors.New values, distinct, that
// print as their message with any verb.
func TestSentinels(t *testing.T) {
	all := []error{connector.ErrClosed, connector.ErrFlushed, connector.ErrOverrun, connector.ErrTruncated,
		connector.ErrMalformed, connector.ErrNotInitialNetNS, connector.ErrNoConnector, connector.ErrNotSupported,
		connector.ErrMessageTooLarge, connector.ErrInvalidGroup, connector.ErrInvalidConfig, connector.ErrNoAgent}
	for i, err := range all {
		for _, verb := range []string{"%v", "%+v", "%s"} {
			if got := fmt.Sprintf(verb, err); got != err.Error() || strings.ContainsAny(got, "&{") {
				t.Errorf("%s of sentinel %d prints %q", verb, i, got)
			}
		}
		for j, other := range all {
			if i != j && errors.Is(err, other) {
				t.Errorf("sentinel %q matches %q", err, other)
			}
		}
	}
}
