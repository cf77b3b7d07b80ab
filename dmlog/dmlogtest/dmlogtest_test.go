package dmlogtest_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/dmlog"
	"github.com/cnlink/connector/dmlog/dmlogtest"
)

func serve(t *testing.T, k *cntest.Kernel, s *dmlog.Server) {
	t.Helper()
	c, err := k.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, c) }()
	if !k.WaitReceiving(c.PortID(), 5*time.Second) {
		t.Fatal("not serving")
	}
	t.Cleanup(func() { cancel(); <-done; c.Close() })
}

// TestLifeCycle drives a dmlog.Server with a MemLog through what the kernel
// sends for a mirror: load, resync, a write, suspend, removal.
func TestLifeCycle(t *testing.T) {
	k := cntest.New(nil)
	dm := dmlogtest.New(k)
	m := dm.Mirror("m1", 0xffff888001000000)
	if _, err := m.Ctr(8192, "core", "1024"); !errors.Is(err, dmlogtest.ErrNoServer) {
		t.Fatalf("CTR without a server: %v, want ErrNoServer", err)
	}
	s := &dmlog.Server{SkipPrivilegeCheck: true}
	serve(t, k, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m.Ctx = ctx
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	dev, err := m.Ctr(8192, "core", "1024")
	must(err)
	if dev != "" {
		t.Errorf("device %q", dev)
	}
	if rs, err := m.RegionSize(); err != nil || rs != 1024 {
		t.Errorf("region size %d %v", rs, err)
	}
	must(m.Resume())
	for {
		r, ok, err := m.ResyncWork()
		must(err)
		if !ok {
			break
		}
		must(m.SetRegionSync(r, true))
	}
	if n, err := m.SyncCount(); err != nil || n != 8 {
		t.Errorf("sync count %d %v", n, err)
	}
	must(m.Mark(2))
	must(m.Flush())
	if c, _ := m.IsClean(2); c {
		t.Error("marked region clean")
	}
	must(m.Clear(2))
	must(m.Flush())
	if c, _ := m.IsClean(2); !c {
		t.Error("cleared region dirty")
	}
	if st, err := m.Status(); err != nil || st != "1 memlog" {
		t.Errorf("status %q %v", st, err)
	}
	must(m.Suspend())
	must(m.Dtr())
	// A log the server does not know: ESRCH, which makes the real kernel
	// re-send the constructor.
	if _, err := m.SyncCount(); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("after DTR: %v, want ESRCH", err)
	}
}

// TestEAGAIN: an EAGAIN ack makes the fake resend under a new seq.
func TestEAGAIN(t *testing.T) {
	k := cntest.New(nil)
	dm := dmlogtest.New(k)
	c, err := k.Dial(&connector.Config{Groups: []connector.Group{7}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := &dmlog.Server{}
	first := true
	mx := connector.NewMux()
	mx.HandleFunc(connector.IDDM, func(req connector.Request) {
		if first {
			first = false
			req.Reply(connector.Message{ID: connector.IDDM, Seq: req.Msg.Seq, Ack: uint32(syscall.EAGAIN)})
			return
		}
		s.ServeConnector(req)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go mx.Serve(ctx, c, nil)
	// The resend reaches the server, which does not know the log.
	if _, err := dm.Request(ctx, dmlog.Header{UUID: "u"}, dmlog.TypeGetSyncCount, nil); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("request: %v, want ESRCH from the server", err)
	}
	if n := dm.Requests(); n != 2 {
		t.Errorf("%d requests sent, want 2 (the first answered EAGAIN)", n)
	}
}

// TestRequestNilContext: Request with a nil ctx returns an error that names
// it instead of panicking, and sends nothing.
func TestRequestNilContext(t *testing.T) {
	dm := dmlogtest.New(cntest.New(nil))
	var nilCtx context.Context
	_, err := dm.Request(nilCtx, dmlog.Header{}, dmlog.TypeCtr, nil)
	if err == nil || err.Error() != "dmlogtest: request: ctx is nil: give it a context.Context" {
		t.Errorf("Request(nil, ...): %v; want an error saying ctx is nil", err)
	}
	if n := dm.Requests(); n != 0 {
		t.Errorf("%d requests sent, want 0", n)
	}
}
