package w1_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/testutil"
	"github.com/cnlink/connector/w1"
	"github.com/cnlink/connector/w1/w1test"
)

// NewConn returns once its Mux reads the socket: the first request's
// replies are claimed by the Mux, and a notification sent meanwhile reaches
// the route registered right after NewConn.
func TestNewConnServes(t *testing.T) {
	for range 20 {
		k := cntest.New(nil)
		a := w1test.New(k)
		c := joinEvents(t, k)
		w, events := eventConn(t, c)
		m := a.AddMaster()
		got, err := w.Masters(ctxT(t))
		if err != nil || len(got) != 1 || got[0] != m {
			t.Fatalf("Masters: %v, %v", got, err)
		}
		if s := w.Stats().Mux; s.Claimed == 0 {
			t.Fatalf("Mux stats %+v: the reply was not read by the Mux", s)
		}
		select {
		case e := <-events:
			if e.Kind != w1.MasterAdded || e.Master != m {
				t.Errorf("event %v", e)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the notification did not reach the route")
		}
		w.Close()
	}
}

// NewConn on a socket it cannot serve (already served by a Mux, or closed)
// fails and leaves nothing running, instead of returning a Conn whose
// reader retries forever.
func TestNewConnCannotServe(t *testing.T) {
	testutil.CheckGoroutines(t, 5*time.Second)
	k := cntest.New(nil)
	w1test.New(k)
	c, err := k.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first, err := w1.NewConn(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w1.NewConn(c, nil); err == nil || !strings.Contains(err.Error(), "another Serve") {
		t.Errorf("second NewConn on one socket: %v, want an error saying another Serve reads it", err)
	}
	// The first still works.
	if _, err := first.Masters(ctxT(t)); err != nil {
		t.Errorf("Masters on the first Conn: %v", err)
	}
	first.Close()

	mx := connector.NewMux()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- mx.Serve(ctx, c, &connector.ServeOptions{OnStart: func(*connector.Conn) { close(started) }})
	}()
	<-started
	if _, err := w1.NewConn(c, nil); err == nil {
		t.Error("NewConn on a socket a Mux serves: no error")
	}
	cancel()
	<-done

	c.Close()
	if _, err := w1.NewConn(c, nil); !errors.Is(err, connector.ErrClosed) {
		t.Errorf("NewConn on a closed socket: %v, want ErrClosed", err)
	}
}

// Messages with id 0:0 are counted: the kernel's empty strays as Strays,
// anything else as ZeroID.
func TestZeroIDCounted(t *testing.T) {
	k, a, w := fake(t, &w1.Config{NoBundle: true})
	m := a.AddMaster()
	if _, err := w.Reset(ctxT(t), m); err != nil {
		t.Fatal(err)
	}
	if err := k.Unicast(w.Conn().PortID(), connector.Message{Data: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(5*time.Second, func() bool { return w.Stats().ZeroID != 0 })
	if s := w.Stats(); s.ZeroID != 1 || s.Strays != 1 {
		t.Errorf("Stats %+v, want 1 stray (the lone RESET's) and 1 other 0:0 message", s)
	}
}

// A reply that comes after its request ended reaches EventHandler's
// function as an ErrNotEvent error, not silence.
func TestLateReplyNotEvent(t *testing.T) {
	k := cntest.New(nil)
	c := joinEvents(t, k)
	reqs := make(chan connector.Message, 1)
	k.Handle(w1.ID, func(req connector.Message, _ connector.Sender) []cntest.Reply { reqs <- req; return nil })
	w, err := w1.NewConn(c, &w1.Config{Timeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	errs := make(chan error, 1)
	w.Mux().Handle(w1.ID, w1.EventHandler(func(e w1.Event, err error) { errs <- err }))
	if _, err := w.Masters(context.Background()); !errors.Is(err, w1.ErrNoReply) {
		t.Fatalf("Masters: %v, want ErrNoReply", err)
	}
	req := <-reqs
	if err := k.Unicast(c.PortID(), connector.Message{ID: w1.ID, Seq: req.Seq, Ack: req.Seq + 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !errors.Is(err, w1.ErrNotEvent) || !strings.Contains(err.Error(), "from kernel;") {
			t.Errorf("EventHandler got %v, want ErrNotEvent naming the kernel unicast", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the late reply did not reach the handler")
	}
}

// Reply records that fit none of the request's commands are counted in
// Stats.Ignored: a data record for a command that returns none, and a
// record after the status that completed the request.
func TestIgnoredRecords(t *testing.T) {
	m := w1.MasterID(1)
	s := w1.NewSlaveID(0x28, 1)
	w := scripted(t, func(req connector.Message) []cntest.Reply {
		id := s.Kernel()
		rec := w1.Msg{Type: w1.MsgMasterCmd, ID: w1.MasterMsgID(m), Cmds: []w1.Cmd{{Cmd: w1.CmdSlaveAdd, Data: id[:]}}}
		data, _ := w1.AppendMsg(nil, rec)
		status, _ := w1.AppendMsg(nil, rec)
		status, _ = w1.AppendMsg(status, rec) // one status too many
		return []cntest.Reply{
			{Message: connector.Message{ID: w1.ID, Seq: req.Seq, Ack: req.Seq + 1, Data: data}},
			{Message: connector.Message{ID: w1.ID, Seq: req.Seq, Ack: req.Ack, Data: status}},
		}
	})
	if err := w.AddSlave(ctxT(t), m, s); err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st.Ignored != 2 {
		t.Errorf("Stats %+v, want 2 ignored records", st)
	}
}

// Watch yields what it read that is not a notification as an ErrNotEvent
// error, and goes on.
func TestWatchNotEvent(t *testing.T) {
	k := cntest.New(nil)
	a := w1test.New(k)
	c := joinEvents(t, k)
	other := connector.CBID{Idx: 0x123, Val: 4}
	if err := k.Unicast(c.PortID(), connector.Message{ID: other, Seq: 8, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	m := a.AddMaster()
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	var errs []error
	for e, err := range w1.Watch(ctx, c) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if e.Kind != w1.MasterAdded || e.Master != m {
			t.Errorf("event %v", e)
		}
		break
	}
	if len(errs) != 1 || !errors.Is(errs[0], w1.ErrNotEvent) || !strings.Contains(errs[0].Error(), other.String()+" seq 8") {
		t.Errorf("Watch yielded errors %v, want one ErrNotEvent naming %v seq 8", errs, other)
	}
}

// A data record for a WRITE (which returns none) in a transaction is
// counted in Stats.Ignored, not taken as the next READ's data.
func TestIgnoredTxRecord(t *testing.T) {
	m := w1.MasterID(1)
	w := scripted(t, func(req connector.Message) []cntest.Reply {
		cmd := func(ct w1.CmdType, data []byte) []byte {
			b, _ := w1.AppendMsg(nil, w1.Msg{Type: w1.MsgMasterCmd, ID: w1.MasterMsgID(m), Cmds: []w1.Cmd{{Cmd: ct, Data: data}}})
			return b
		}
		data := append(cmd(w1.CmdWrite, []byte{1}), cmd(w1.CmdRead, []byte{0x42})...)
		status := append(cmd(w1.CmdWrite, []byte{1}), cmd(w1.CmdRead, []byte{0x42})...)
		return []cntest.Reply{
			// The WRITE's data record, then its status; the READ's data
			// record, then its status.
			{Message: connector.Message{ID: w1.ID, Seq: req.Seq, Ack: req.Seq + 1, Data: data[:len(data)/2]}},
			{Message: connector.Message{ID: w1.ID, Seq: req.Seq, Ack: req.Ack, Data: status[:len(status)/2]}},
			{Message: connector.Message{ID: w1.ID, Seq: req.Seq, Ack: req.Seq + 1, Data: data[len(data)/2:]}},
			{Message: connector.Message{ID: w1.ID, Seq: req.Seq, Ack: req.Ack, Data: status[len(status)/2:]}},
		}
	})
	got := make([]byte, 1)
	if err := w.Master(m).Write([]byte{1}).Read(got).Do(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got[0] != 0x42 {
		t.Errorf("read %#x, want 0x42", got[0])
	}
	if st := w.Stats(); st.Ignored != 1 {
		t.Errorf("Stats %+v, want 1 ignored record", st)
	}
}

// scripted returns a Conn on a fake kernel whose w1 agent answers every
// request with what reply returns for it.
func scripted(t *testing.T, reply func(req connector.Message) []cntest.Reply) *w1.Conn {
	t.Helper()
	k := cntest.New(nil)
	c, err := k.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	k.Handle(w1.ID, func(req connector.Message, _ connector.Sender) []cntest.Reply { return reply(req) })
	w, err := w1.NewConn(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}
