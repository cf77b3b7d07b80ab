package cntest

import (
	"encoding/binary"
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/transport"
)

// These tests drive fake sockets directly, below package connector, for
// what a Conn never sends: several group bits at once, a port and a group
// together, and malformed datagrams to the kernel.

func newTestSocket(k *Kernel, groups ...connector.Group) *socket {
	mask, err := connector.GroupMask(groups...)
	if err != nil {
		panic(err)
	}
	return k.newSocket(mask, true)
}

// recvOne takes one datagram without waiting (the queue must hold one).
func recvOne(t *testing.T, s *socket) ([]byte, transport.Meta) {
	t.Helper()
	if s.k.Queued(s.port) == 0 {
		t.Fatalf("port %d: nothing queued", s.port)
	}
	b := transport.NewBatch(1, 1024)
	n, err := s.Recv(b, true)
	if err != nil || n != 1 {
		t.Fatalf("port %d: Recv = %d, %v", s.port, n, err)
	}
	return b.Bufs[0][:b.Meta[0].N], b.Meta[0]
}

func TestMulticastUsesLowestGroupOnly(t *testing.T) {
	k := New(nil)
	sender := newTestSocket(k)
	g20 := newTestSocket(k, 20)
	g21 := newTestSocket(k, 21)
	both := newTestSocket(k, 20, 21)

	p := MustDatagram(connector.Message{ID: connector.CBID{Idx: 20, Val: 1}, Data: []byte("hi")})
	if err := sender.Send(p, 0, (1<<19)|(1<<20)); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*socket{g20, both} {
		got, meta := recvOne(t, s)
		if string(got) != string(p) {
			t.Errorf("port %d got % x, want % x", s.port, got, p)
		}
		if meta.Port != sender.port || meta.Groups != 1<<19 {
			t.Errorf("port %d: source address port %d groups %#x, want port %d groups %#x", s.port, meta.Port, meta.Groups, sender.port, 1<<19)
		}
		if q := k.Queued(s.port); q != 0 {
			t.Errorf("port %d received %d more datagrams, want exactly one", s.port, q)
		}
	}
	if q := k.Queued(g21.port); q != 0 {
		t.Errorf("group 21 member received %d datagrams; only the lowest group (20) may be used", q)
	}
	// A multicast with nl_pid 0 also goes to the kernel.
	if reqs := k.Requests(); len(reqs) != 1 || reqs[0].From != (connector.Sender{Port: sender.port, Group: 20}) {
		t.Errorf("kernel requests = %+v, want the multicast from port %d on group 20", reqs, sender.port)
	}
}

func TestMulticastWithPortSkipsItThenUnicasts(t *testing.T) {
	k := New(nil)
	sender := newTestSocket(k, 22)
	a := newTestSocket(k, 22)
	b := newTestSocket(k, 22)
	p := MustDatagram(connector.Message{ID: connector.CBID{Idx: 22, Val: 1}})
	if err := sender.Send(p, a.port, 1<<21); err != nil {
		t.Fatal(err)
	}
	if q := k.Queued(a.port); q != 1 {
		t.Errorf("addressed port got %d datagrams, want exactly 1", q)
	}
	_, meta := recvOne(t, a)
	if meta.Groups != 1<<21 {
		t.Errorf("addressed port sees groups %#x, want %#x", meta.Groups, 1<<21)
	}
	if q := k.Queued(b.port); q != 1 {
		t.Errorf("other member got %d datagrams, want 1", q)
	}
	if q := k.Queued(sender.port); q != 0 {
		t.Errorf("sender got its own multicast (%d datagrams)", q)
	}
	if n := len(k.Requests()); n != 0 {
		t.Errorf("kernel got %d requests; a multicast addressed to a userspace port must not reach it", n)
	}
}

func TestKernelRejectsWhatTheKernelDrops(t *testing.T) {
	good := MustDatagram(connector.Message{ID: connector.CBID{Idx: 1, Val: 1}, Data: []byte{1, 0, 0, 0}})
	withLen := func(l uint32) []byte {
		b := append([]byte(nil), good...)
		binary.NativeEndian.PutUint32(b[0:4], l)
		return b
	}
	withCNLen := func(l uint16) []byte {
		b := append([]byte(nil), good...)
		binary.NativeEndian.PutUint16(b[32:34], l)
		return b
	}
	huge := make([]byte, 36+16365)
	binary.NativeEndian.PutUint32(huge[0:4], uint32(len(huge)))
	maxOK := make([]byte, 36+16364)
	binary.NativeEndian.PutUint32(maxOK[0:4], uint32(len(maxOK)))
	binary.NativeEndian.PutUint16(maxOK[32:34], 16364)

	tests := []struct {
		name   string
		p      []byte
		reason string // "" = accepted
	}{
		{"good", good, ""},
		{"short datagram", good[:15], "shorter than the 16-byte netlink header"},
		{"no room for cn_msg", withLen(35), "leaves no room"},
		{"nlmsg_len beyond datagram", withLen(uint32(len(good) + 1)), "larger than the 40-byte datagram"},
		{"payload above CONNECTOR_MAX_MSG_SIZE", huge, "exceeds CONNECTOR_MAX_MSG_SIZE"},
		{"largest payload", maxOK, ""},
		{"cn_msg len lies", withCNLen(5), "cn_msg len 5 does not fit"},
		{"trailing bytes ignored", append(append([]byte(nil), good...), make([]byte, 100)...), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := New(nil)
			s := newTestSocket(k)
			if err := s.Send(tt.p, 0, 0); err != nil {
				t.Fatalf("Send = %v; the kernel accepts every datagram and drops bad ones silently", err)
			}
			rej, reqs := k.Rejected(), k.Requests()
			if tt.reason == "" {
				if len(rej) != 0 || len(reqs) != 1 {
					t.Fatalf("rejected %+v, requests %d; want accepted", rej, len(reqs))
				}
				return
			}
			if len(reqs) != 0 || len(rej) != 1 {
				t.Fatalf("requests %+v, rejected %d; want one rejection", reqs, len(rej))
			}
			if !strings.Contains(rej[0].Reason, tt.reason) {
				t.Errorf("reason %q does not say %q", rej[0].Reason, tt.reason)
			}
			if rej[0].From.Port != s.port {
				t.Errorf("rejection from port %d, want %d", rej[0].From.Port, s.port)
			}
		})
	}
}

func TestSocketSendErrors(t *testing.T) {
	k := New(nil)
	s := newTestSocket(k)
	unpriv := k.newSocket(0, false)
	p := MustDatagram(connector.Message{})
	if err := s.Send(nil, 0, 0); !errors.Is(err, errNoData) {
		t.Errorf("empty send = %v, want ENODATA", err)
	}
	if err := s.Send(make([]byte, defaultSndBuf), 0, 0); !errors.Is(err, syscall.EMSGSIZE) {
		t.Errorf("send larger than the send buffer = %v, want EMSGSIZE", err)
	}
	if err := s.Send(p, 12345, 0); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("send to a missing port = %v, want ECONNREFUSED", err)
	}
	if err := unpriv.Send(p, s.port, 0); !errors.Is(err, syscall.EPERM) {
		t.Errorf("unprivileged unicast = %v, want EPERM", err)
	}
	if err := unpriv.Send(p, 0, 1); !errors.Is(err, syscall.EPERM) {
		t.Errorf("unprivileged multicast = %v, want EPERM", err)
	}
	if err := unpriv.Send(p, 0, 0); err != nil {
		t.Errorf("unprivileged send to the kernel = %v, want success", err)
	}
	if err := unpriv.Join(2); !errors.Is(err, syscall.EPERM) {
		t.Errorf("unprivileged join of group 2 = %v, want EPERM", err)
	}
	if err := unpriv.Join(3); err != nil {
		t.Errorf("unprivileged join of group 3 = %v, want success (cn_bind allows odd groups)", err)
	}
	if err := s.Join(33); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("join of group 33 = %v, want EINVAL", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(p, 0, 0); err == nil {
		t.Error("send on a closed socket succeeded")
	}
}

func TestRingIsFIFOAcrossWrapAndGrowth(t *testing.T) {
	var r ring
	in, out := 0, 0
	pop := func() {
		t.Helper()
		sl := r.front()
		if sl.port != uint32(out) || len(sl.buf) != 1 || sl.buf[0] != byte(out) {
			t.Fatalf("popped port %d data % x, want %d", sl.port, sl.buf, out)
		}
		r.pop()
		out++
	}
	for round := range 60 {
		for range round%7 + 1 {
			r.push([]byte{byte(in)}, uint32(in), 0, 0)
			in++
		}
		for i := 0; i < round%5 && r.n > 0; i++ {
			pop()
		}
	}
	for r.n > 0 {
		pop()
	}
	if out != in {
		t.Fatalf("popped %d of %d pushed", out, in)
	}
}
