package dmlog

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
)

// fakeDM plays the kernel side of dm-log-userspace on a cntest.Kernel: it
// multicasts requests on group 7 as dm_consult_userspace does and collects
// what the server sends back to port 0.
type fakeDM struct {
	t       *testing.T
	k       *cntest.Kernel
	replies chan connector.Message
	seq     uint32
	uuid    string
	luid    uint64
}

func newFakeDM(t *testing.T) *fakeDM {
	f := &fakeDM{t: t, k: cntest.New(nil), replies: make(chan connector.Message, 64), uuid: testUUID, luid: 0xffff888001234500}
	f.k.Handle(connector.IDDM, func(m connector.Message, from connector.Sender) []cntest.Reply {
		f.replies <- m
		return nil
	})
	return f
}

// serve starts s on a new Conn of the fake and returns a stop function that
// waits for Serve to return, and Serve's error.
func (f *fakeDM) serve(s *Server) (*connector.Conn, func() error) {
	f.t.Helper()
	c, err := f.k.Dial(nil)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, c) }()
	// Wait until Serve joined group 7 and reads.
	if !f.k.WaitReceiving(c.PortID(), 5*time.Second) {
		f.t.Fatal("Serve never started receiving")
	}
	var once sync.Once
	var serr error
	stop := func() error {
		once.Do(func() {
			cancel()
			serr = <-done
			c.Close()
		})
		return serr
	}
	f.t.Cleanup(func() { stop() })
	return c, stop
}

// send multicasts one request and returns its seq.
func (f *fakeDM) send(typ RequestType, data []byte) uint32 {
	f.t.Helper()
	f.seq++
	b, err := AppendRequest(nil, Request{Header: Header{LUID: f.luid, UUID: f.uuid, Version: Version, Seq: f.seq, Type: typ}, Data: data})
	if err != nil {
		f.t.Fatal(err)
	}
	if n, err := f.k.Multicast(7, connector.Message{ID: connector.IDDM, Seq: f.seq, Data: b}); err != nil || n == 0 {
		f.t.Fatalf("multicast %v: %d receivers, %v (no server: the kernel would get ESRCH)", typ, n, err)
	}
	return f.seq
}

func (f *fakeDM) next() connector.Message {
	f.t.Helper()
	select {
	case m := <-f.replies:
		return m
	case <-time.After(5 * time.Second):
		f.t.Fatal("no reply within 5 s")
	}
	panic("unreachable")
}

// call sends a request and returns the decoded reply, checking that it is
// one the kernel would match: a full reply with the request's seq.
func (f *fakeDM) call(typ RequestType, data []byte) Reply {
	f.t.Helper()
	seq := f.send(typ, data)
	m := f.next()
	if len(m.Data) == 0 {
		f.t.Fatalf("%v: ack reply (errno %d), want a full reply", typ, m.Ack)
	}
	r, err := ParseReply(m.Data)
	if err != nil {
		f.t.Fatalf("%v: reply: %v", typ, err)
	}
	if r.Seq != seq || r.UUID != f.uuid || r.LUID != f.luid || r.Type != typ {
		f.t.Fatalf("%v: reply header %+v does not echo the request (seq %d)", typ, r.Header, seq)
	}
	return r
}

// ok calls and checks for success.
func (f *fakeDM) ok(typ RequestType, data []byte) []byte {
	f.t.Helper()
	r := f.call(typ, data)
	if r.Errno() != 0 {
		f.t.Fatalf("%v: errno %v", typ, r.Errno())
	}
	return r.Data
}

func (f *fakeDM) u64(typ RequestType, data []byte) uint64 {
	f.t.Helper()
	v, err := ParseUint64(f.ok(typ, data))
	if err != nil {
		f.t.Fatalf("%v: %v", typ, err)
	}
	return v
}

func (f *fakeDM) pair(typ RequestType, data []byte) (bool, uint64) {
	f.t.Helper()
	b, v, err := ParsePair(f.ok(typ, data))
	if err != nil {
		f.t.Fatalf("%v: %v", typ, err)
	}
	return b, v
}
