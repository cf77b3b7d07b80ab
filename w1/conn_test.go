package w1_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/testutil"
	"github.com/cnlink/connector/w1"
	"github.com/cnlink/connector/w1/w1test"
)

// fake returns a fake kernel with a w1 agent and a w1 Conn on it.
func fake(t testing.TB, cfg *w1.Config) (*cntest.Kernel, *w1test.Agent, *w1.Conn) {
	t.Helper()
	k := cntest.New(nil)
	a := w1test.New(k)
	c, err := k.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err := w1.NewConn(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.Close()
		c.Close()
		if d := a.Dropped(); len(d) > 0 {
			t.Errorf("the fake agent could not queue %d replies: %v", len(d), d[0])
		}
	})
	return k, a, w
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var modes = []struct {
	name string
	cfg  *w1.Config
}{{"bundled", nil}, {"unbundled", &w1.Config{NoBundle: true}}}

func TestMasters(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			k, a, w := fake(t, mode.cfg)
			ctx := ctxT(t)
			ms, err := w.Masters(ctx)
			if err != nil || ms == nil || len(ms) != 0 {
				t.Fatalf("no masters: %v, %v", ms, err)
			}
			a.AddMaster()
			a.AddMaster()
			ms, err = w.Masters(ctx)
			if err != nil || !slices.Equal(ms, []w1.MasterID{1, 2}) {
				t.Fatalf("Masters = %v, %v", ms, err)
			}
			// Every request carries a random ack other than seq+1 and
			// the bundle flag unless it is turned off.
			for _, r := range k.Requests() {
				m := r.Message
				if m.Ack == m.Seq+1 || m.Ack == 0 || (m.Flags == w1.FlagBundle) == (mode.cfg != nil) {
					t.Errorf("request seq %d ack %d flags %d", m.Seq, m.Ack, m.Flags)
				}
			}
		})
	}
}

// The kernel splits a long master list into page-sized records with no end
// marker; Masters must collect every page.
func TestMastersPages(t *testing.T) {
	_, a, w := fake(t, nil)
	var want []w1.MasterID
	for range 2500 {
		want = append(want, a.AddMaster())
	}
	ms, err := w.Masters(ctxT(t))
	if err != nil || !slices.Equal(ms, want) {
		t.Fatalf("Masters returned %d ids (err %v), want %d", len(ms), err, len(want))
	}
}

func TestReset(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			_, a, w := fake(t, mode.cfg)
			ctx := ctxT(t)
			m := a.AddMaster()
			if ok, err := w.Reset(ctx, m); !ok || err != nil {
				t.Errorf("presence: Reset = %v, %v", ok, err)
			}
			a.SetPresence(m, false)
			if ok, err := w.Reset(ctx, m); ok || err != nil {
				t.Errorf("no presence: Reset = %v, %v", ok, err)
			}
			_, err := w.Reset(ctx, 99)
			var e *w1.Error
			if !errors.Is(err, syscall.ENODEV) || !errors.As(err, &e) || e.Index != -1 {
				t.Errorf("unknown master: err = %v", err)
			}
			// Unbundled, each lone RESET comes after a stray record.
			if got, want := w.Stats().Strays, map[bool]uint64{true: 2, false: 0}[mode.cfg != nil]; got != want {
				t.Errorf("%d strays, want %d", got, want)
			}
		})
	}
}

func TestMasterTx(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			_, a, w := fake(t, mode.cfg)
			m := a.AddMaster()
			a.QueueRead(m, []byte{1, 2, 3, 4, 5})
			read := make([]byte, 3)
			touch := []byte{0xff, 0xff}
			err := w.Master(m).Reset().Write([]byte{0xcc, 0x44}).Read(read).Touch(touch).Do(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(read, []byte{1, 2, 3}) || !bytes.Equal(touch, []byte{4, 5}) {
				t.Errorf("read % x, touch % x", read, touch)
			}
			if got := a.Written(m); !bytes.Equal(got, []byte{0xcc, 0x44, 0xff, 0xff}) {
				t.Errorf("bus saw % x", got)
			}
			// A bad command in the middle: its own status, the others run.
			a.SetPresence(m, false)
			read = make([]byte, 1)
			err = w.Master(m).Write([]byte{1}).Reset().Read(read).Do(ctxT(t))
			var e *w1.Error
			if !errors.Is(err, w1.ErrNoPresence) || !errors.As(err, &e) || e.Index != 1 || e.Cmd != w1.CmdReset {
				t.Errorf("err = %v, want no presence at index 1", err)
			}
			if err := w.Master(m).Do(ctxT(t)); err == nil {
				t.Error("an empty transaction succeeded")
			}
		})
	}
}

// TestTxRunsOnce: a second Do on a Tx sends nothing and fails with
// ErrTxDone, after a success and after a failure alike (a failed Do may
// have reached the bus), so that writes are never repeated by accident.
func TestTxRunsOnce(t *testing.T) {
	_, a, w := fake(t, nil)
	ctx := ctxT(t)
	m := a.AddMaster()
	tx := w.Master(m).Write([]byte{0x44})
	if err := tx.Do(ctx); err != nil {
		t.Fatal(err)
	}
	n := a.Requests()
	err := tx.Do(ctx)
	if !errors.Is(err, w1.ErrTxDone) {
		t.Errorf("second Do: err = %v, want ErrTxDone", err)
	}
	if want := "w1: transaction on w1_bus_master1: the transaction already ran"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("second Do: err = %v, want it to start with %q", err, want)
	}
	if got := a.Requests(); got != n {
		t.Errorf("the agent saw %d requests after the second Do, want %d (none sent)", got, n)
	}
	if got := a.Written(m); !bytes.Equal(got, []byte{0x44}) {
		t.Errorf("bus saw % x, want 44 once", got)
	}
	// A Do that failed counts as run too.
	a.SetPresence(m, false)
	tx = w.Master(m).Reset().Write([]byte{0x55})
	if err := tx.Do(ctx); !errors.Is(err, w1.ErrNoPresence) {
		t.Fatalf("err = %v, want ErrNoPresence", err)
	}
	if err := tx.Do(ctx); !errors.Is(err, w1.ErrTxDone) {
		t.Errorf("Do after a failed Do: err = %v, want ErrTxDone", err)
	}
	if got := a.Written(m); !bytes.Equal(got, []byte{0x55}) {
		t.Errorf("bus saw % x, want 55 once", got)
	}
	// Reset builds its Tx afresh each time: it may be called again.
	for range 2 {
		if _, err := w.Reset(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNil: nil arguments give an error where the entry point returns one,
// and otherwise (test helpers, handler constructors, as Mux.Handle) a
// panic whose message says what is nil; never a nil dereference.
func TestNil(t *testing.T) {
	if _, err := w1.NewConn(nil, nil); err == nil || !strings.HasPrefix(err.Error(), "w1: new conn: ") || !strings.Contains(err.Error(), "nil") {
		t.Errorf("NewConn(nil): %v", err)
	}
	for _, c := range []struct {
		what, want string
		f          func()
	}{
		{"w1test.New(nil)", "w1test: New: the *cntest.Kernel is nil", func() { w1test.New(nil) }},
		{"EventHandler(nil)", "w1: EventHandler: nil function", func() { w1.EventHandler(nil) }},
	} {
		func() {
			defer func() {
				if v, _ := recover().(string); !strings.Contains(v, c.want) {
					t.Errorf("%s: panicked with %q, want %q", c.what, v, c.want)
				}
			}()
			c.f()
		}()
	}
}

func TestSlaves(t *testing.T) {
	_, a, w := fake(t, nil)
	ctx := ctxT(t)
	m := a.AddMaster()
	s1, s2 := w1.NewSlaveID(0x28, 0x79e36c0), w1.NewSlaveID(0x2d, 0x1234)
	if got, err := w.Slaves(ctx, m); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("empty bus: Slaves = %v, %v", got, err)
	}
	a.AttachDevice(m, s1)
	if got, err := w.Search(ctx, m); err != nil || !slices.Equal(got, []w1.SlaveID{s1}) {
		t.Fatalf("Search = %v, %v", got, err)
	}
	a.SetAlarm(m, s1)
	if got, err := w.AlarmSearch(ctx, m); err != nil || !slices.Equal(got, []w1.SlaveID{s1}) {
		t.Fatalf("AlarmSearch = %v, %v", got, err)
	}
	if err := w.AddSlave(ctx, m, s2); err != nil {
		t.Fatal(err)
	}
	if err := w.AddSlave(ctx, m, s2); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("second AddSlave: err = %v, want EINVAL", err)
	}
	if got, err := w.Slaves(ctx, m); err != nil || !slices.Equal(got, []w1.SlaveID{s1, s2}) {
		t.Fatalf("Slaves = %v, %v", got, err)
	}
	if err := w.RemoveSlave(ctx, m, s1); err != nil {
		t.Fatal(err)
	}
	if err := w.RemoveSlave(ctx, m, s1); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("second RemoveSlave: err = %v, want EINVAL", err)
	}
	if _, err := w.Slaves(ctx, 42); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("unknown master: err = %v", err)
	}
}

func TestSlaveTx(t *testing.T) {
	_, a, w := fake(t, nil)
	ctx := ctxT(t)
	m := a.AddMaster()
	s := w1.NewSlaveID(0x28, 7)
	buf := make([]byte, 2)
	if err := w.Slave(s).Read(buf).Do(ctx); !errors.Is(err, syscall.ENODEV) {
		t.Fatalf("unregistered slave: err = %v", err)
	}
	if err := w.AddSlave(ctx, m, s); err != nil {
		t.Fatal(err)
	}
	a.Written(m)
	a.QueueRead(m, []byte{0x50, 0x05})
	if err := w.Slave(s).Write([]byte{0xbe}).Read(buf).Do(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, []byte{0x50, 0x05}) {
		t.Errorf("read % x", buf)
	}
	// The only slave is selected with SKIP ROM.
	if got := a.Written(m); !bytes.Equal(got, []byte{0xcc, 0xbe}) {
		t.Errorf("bus saw % x", got)
	}
	err := w.Slave(s).Reset().Do(ctx)
	var e *w1.Error
	if !errors.Is(err, syscall.EINVAL) || !errors.As(err, &e) || e.Index != 0 {
		t.Errorf("slave reset: err = %v, want EINVAL for command 0", err)
	}
	a.SetPresence(m, false)
	err = w.Slave(s).Write([]byte{1}).Read(buf).Do(ctx)
	if !errors.Is(err, syscall.ENODEV) || !errors.As(err, &e) || e.Index != 0 {
		t.Errorf("no presence: err = %v, want ENODEV for command 0", err)
	}
}

func TestNoAgent(t *testing.T) {
	_, a, w := fake(t, &w1.Config{Timeout: time.Minute})
	a.Unregister()
	start := time.Now()
	_, err := w.Masters(context.Background())
	if !errors.Is(err, connector.ErrNoAgent) {
		t.Fatalf("err = %v, want ErrNoAgent", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v: it waited instead of failing at once", d)
	}
}

// An agent that never answers: the request ends at its deadline with
// ErrNoReply, and the Conn stays usable.
func TestNoReply(t *testing.T) {
	k, _, w := fake(t, &w1.Config{Timeout: 50 * time.Millisecond})
	k.Handle(w1.ID, func(connector.Message, connector.Sender) []cntest.Reply { return nil })
	if _, err := w.Masters(context.Background()); !errors.Is(err, w1.ErrNoReply) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrNoReply", err)
	}
	k.Handle(w1.ID, nil)
	a := w1test.New(k)
	a.AddMaster()
	if ms, err := w.Masters(ctxT(t)); err != nil || len(ms) != 1 {
		t.Fatalf("after a timeout: %v, %v", ms, err)
	}
}

func TestConcurrent(t *testing.T) {
	_, a, w := fake(t, nil)
	m := a.AddMaster()
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if i%2 == 0 {
					if ms, err := w.Masters(ctx); err != nil || len(ms) != 1 {
						errs <- err
						return
					}
				} else if err := w.Master(m).Reset().Read(make([]byte, 4)).Do(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestClose(t *testing.T) {
	_, _, w := fake(t, nil)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Masters(ctxT(t)); !errors.Is(err, connector.ErrClosed) {
		t.Errorf("after Close: err = %v", err)
	}
	if err := w.Close(); !errors.Is(err, connector.ErrClosed) {
		t.Errorf("second Close: err = %v", err)
	}
}

func TestEvents(t *testing.T) {
	k := cntest.New(nil)
	a := w1test.New(k)
	c := joinEvents(t, k)
	w, events := eventConn(t, c)
	defer w.Close()
	m := a.AddMaster()
	s := w1.NewSlaveID(0x28, 1)
	if err := w.AddSlave(ctxT(t), m, s); err != nil {
		t.Fatal(err)
	}
	a.RemoveMaster(m)
	want := []w1.Event{
		{Kind: w1.MasterAdded, Master: m, Seq: 1},
		{Kind: w1.SlaveAdded, Slave: s, Seq: 2},
		{Kind: w1.SlaveRemoved, Slave: s, Seq: 3},
		{Kind: w1.MasterRemoved, Master: m, Seq: 4},
	}
	for i, we := range want {
		select {
		case e := <-events:
			if e != we {
				t.Errorf("event %d = %+v, want %+v", i, e, we)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d did not arrive", i)
		}
	}
}

// joinEvents returns a socket on k joined to group 3, closed when the test
// ends.
func joinEvents(t *testing.T, k *cntest.Kernel) *connector.Conn {
	t.Helper()
	c, err := k.Dial(&connector.Config{Groups: []connector.Group{w1.Group}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// watchNoAgent checks that Watch on c (nil: a socket of its own) yields one
// error matching ErrNoAgent and ends, well before its context's deadline.
func watchNoAgent(t *testing.T, c *connector.Conn) {
	t.Helper()
	var errs []error
	for e, err := range w1.Watch(ctxT(t), c) {
		if err == nil {
			t.Fatalf("Watch without the w1 agent: event %v", e)
		}
		errs = append(errs, err)
	}
	if len(errs) != 1 || !errors.Is(errs[0], connector.ErrNoAgent) {
		t.Fatalf("Watch without the w1 agent: errors %v, want one matching ErrNoAgent", errs)
	}
	if !strings.Contains(errs[0].Error(), "modprobe wire") {
		t.Errorf("Watch without the w1 agent: %v, want it to say to load the wire module", errs[0])
	}
	t.Logf("Watch without the w1 agent: %v", errs[0])
}

// eventConn returns a w1 Conn on c, which must have joined group 3, whose
// Mux routes each notification to the channel (an undecodable one fails the
// test). The caller closes the Conn.
func eventConn(t *testing.T, c *connector.Conn) (*w1.Conn, <-chan w1.Event) {
	t.Helper()
	w, err := w1.NewConn(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan w1.Event, 16)
	w.Mux().Handle(w1.ID, w1.EventHandler(func(e w1.Event, err error) {
		if err != nil {
			t.Error(err)
			return
		}
		events <- e
	}))
	return w, events
}

func TestWatch(t *testing.T) {
	k := cntest.New(nil)
	a := w1test.New(k)
	c := joinEvents(t, k)
	a.AddMaster()
	a.AddMaster()
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	var got []w1.Event
	var errs []error
	for e, err := range w1.Watch(ctx, c) {
		if err != nil {
			if e != (w1.Event{}) || e.String() != "no event" {
				t.Errorf("error %v came with event %+v (%v), want the zero Event, \"no event\"", err, e, e)
			}
			errs = append(errs, err)
			continue
		}
		got = append(got, e)
		if len(got) == 2 {
			cancel()
		}
	}
	if len(got) != 2 || got[1].Master != 2 || got[1].Kind != w1.MasterAdded {
		t.Errorf("events %v", got)
	}
	// Cancelled: the last thing yielded is ctx.Err(), as proc's
	// Listener.Events does, and c can be read again.
	if len(errs) != 1 || errs[0] != context.Canceled {
		t.Errorf("errors %v, want one: context.Canceled", errs)
	}
	a.AddMaster()
	if msgs, _, err := c.Receive(); err != nil || len(msgs) != 1 {
		t.Errorf("after Watch: %v, %v", msgs, err)
	}
}

// Without the w1 agent, Watch yields ErrNoAgent at once and ends, rather
// than wait for notifications that would never come.
func TestWatchNoAgent(t *testing.T) {
	k := cntest.New(nil)
	c := joinEvents(t, k)
	watchNoAgent(t, c)
	// With the agent registered, the same Conn watches.
	a := w1test.New(k)
	a.AddMaster()
	for e, err := range w1.Watch(ctxT(t), c) {
		if err != nil || e.Kind != w1.MasterAdded || e.Master != 1 {
			t.Errorf("with the agent: %v, %v; want master added 1", e, err)
		}
		break
	}
}

func TestPoll(t *testing.T) {
	_, a, w := fake(t, nil)
	m := a.AddMaster()
	s := w1.NewSlaveID(0x28, 1)
	a.AttachDevice(m, s)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	next, stop := iterPull(w.Poll(ctx, 5*time.Millisecond))
	defer stop()
	expect := func(want w1.Event) {
		t.Helper()
		e, err := next()
		if err != nil || e != want {
			t.Fatalf("got %+v, %v; want %+v", e, err, want)
		}
	}
	expect(w1.Event{Kind: w1.MasterAdded, Master: m})
	if _, err := w.Search(ctx, m); err != nil {
		t.Fatal(err)
	}
	expect(w1.Event{Kind: w1.SlaveAdded, Master: m, Slave: s})
	a.RemoveMaster(m)
	expect(w1.Event{Kind: w1.SlaveRemoved, Master: m, Slave: s})
	expect(w1.Event{Kind: w1.MasterRemoved, Master: m})
	// Cancelled: it yields ctx.Err() with the zero Event, and ends.
	cancel()
	if e, err := next(); err != context.Canceled || e != (w1.Event{}) {
		t.Fatalf("after cancel: %+v, %v; want the zero Event and context.Canceled", e, err)
	}
	if e, err := next(); err != errEnded {
		t.Fatalf("after ctx.Err(): %+v, %v; want the end of the iteration", e, err)
	}
}

// TestPollInterval: an interval that is not positive is an error, not the
// panic of time.NewTicker.
func TestPollInterval(t *testing.T) {
	_, _, w := fake(t, nil)
	for _, d := range []time.Duration{0, -time.Second} {
		var errs []error
		for e, err := range w.Poll(ctxT(t), d) {
			if err == nil {
				t.Fatalf("Poll(%v): event %v", d, e)
			}
			errs = append(errs, err)
		}
		if len(errs) != 1 || !errors.Is(errs[0], connector.ErrInvalidConfig) {
			t.Errorf("Poll(%v): %v; want one error matching ErrInvalidConfig", d, errs)
		}
		testutil.CheckErrorShape(t, "Poll", errs[0], "w1")
	}
}

// TestEventString: the zero Event is no event, and says so; every kind
// maps back to its notification message type.
func TestEventString(t *testing.T) {
	for _, c := range []struct {
		e    w1.Event
		want string
	}{
		{w1.Event{}, "no event"},
		{w1.Event{Kind: w1.SlaveAdded, Slave: w1.NewSlaveID(0x28, 0x79e36c0)}, "slave added 28-0000079e36c0"},
		{w1.Event{Kind: w1.SlaveRemoved}, "slave removed 00-000000000000"},
		{w1.Event{Kind: w1.MasterAdded, Master: 1}, "master added w1_bus_master1"},
		{w1.Event{Kind: w1.MasterRemoved, Master: 2}, "master removed w1_bus_master2"},
		{w1.Event{Kind: 9}, "EventKind(9)"},
	} {
		if got := c.e.String(); got != c.want {
			t.Errorf("%+v: String() = %q, want %q", c.e, got, c.want)
		}
	}
	for k, want := range map[w1.EventKind]w1.MsgType{w1.SlaveAdded: w1.MsgSlaveAdd, w1.SlaveRemoved: w1.MsgSlaveRemove, w1.MasterAdded: w1.MsgMasterAdd, w1.MasterRemoved: w1.MsgMasterRemove} {
		if got, ok := k.MsgType(); !ok || got != want {
			t.Errorf("%v.MsgType() = %v, %v; want %v", k, got, ok, want)
		}
	}
	if _, ok := w1.NoEvent.MsgType(); ok {
		t.Error("NoEvent has a message type")
	}
}

// Close ends a request that waits for a reply that never comes, at once,
// on a Conn that NewConn was given (and so does not close).
func TestCloseWhileWaiting(t *testing.T) {
	k, _, w := fake(t, &w1.Config{Timeout: time.Minute})
	sent := make(chan struct{})
	k.Handle(w1.ID, func(connector.Message, connector.Sender) []cntest.Reply { close(sent); return nil })
	done := make(chan error, 1)
	go func() {
		_, err := w.Masters(context.Background())
		done <- err
	}()
	<-sent
	w.Close()
	select {
	case err := <-done:
		if !errors.Is(err, connector.ErrClosed) {
			t.Errorf("err = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the waiting request")
	}
}

// A long slave list does not fit one record: the kernel splits it over
// several data records of the same command, before the one status (as
// w1test's TestListSplit checks).
func TestSlavesSplit(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			_, a, w := fake(t, mode.cfg)
			ctx := ctxT(t)
			m := a.AddMaster()
			var want []w1.SlaveID
			for i := range 2100 { // 16800 bytes of ids: more than one record holds
				want = append(want, w1.NewSlaveID(0x28, uint64(i)))
			}
			a.RegisterSlave(m, want...)
			for i := range 100 {
				a.AttachDevice(m, w1.NewSlaveID(0x2d, uint64(i)))
			}
			got, err := w.Slaves(ctx, m)
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("Slaves returned %d ids (err %v), want %d", len(got), err, len(want))
			}
			found, err := w.Search(ctx, m)
			if err != nil || len(found) != 64 {
				t.Fatalf("Search returned %d ids (err %v), want 64 (max_slave_count)", len(found), err)
			}
		})
	}
}

// Conns that are closed leave no goroutine behind, whether requests
// completed, timed out or were cut by Close.
func TestNoGoroutineLeak(t *testing.T) {
	testutil.CheckGoroutines(t, 5*time.Second)
	k := cntest.New(nil)
	a := w1test.New(k)
	m := a.AddMaster()
	for i := range 10 {
		c, err := k.Dial(nil)
		if err != nil {
			t.Fatal(err)
		}
		w, err := w1.NewConn(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Reset(ctxT(t), m); err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			k.Handle(w1.ID, func(connector.Message, connector.Sender) []cntest.Reply { return nil })
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			_, err := w.Masters(ctx)
			cancel()
			if !errors.Is(err, w1.ErrNoReply) {
				t.Fatal(err)
			}
			k.Handle(w1.ID, nil)
			a = w1test.New(k)
			m = a.AddMaster()
		}
		w.Close()
		c.Close()
	}
}

// A Config field out of range is an error naming it, never the default.
func TestConfigRange(t *testing.T) {
	k := cntest.New(nil)
	w1test.New(k)
	type bad struct {
		cfg   w1.Config
		field string
	}
	cases := []bad{{w1.Config{Timeout: -1}, "Config.Timeout"}, {w1.Config{ReadBufferSize: -1}, "Config.ReadBufferSize"}}
	if strconv.IntSize == 64 { // a 32-bit int cannot exceed MaxBufferSize
		big := int64(connector.MaxBufferSize) + 1
		cases = append(cases, bad{w1.Config{ReadBufferSize: int(big)}, "Config.ReadBufferSize"})
	}
	for _, tc := range cases {
		c, err := k.Dial(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w1.NewConn(c, &tc.cfg); !errors.Is(err, connector.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("NewConn(%+v): %v, want ErrInvalidConfig naming %s", tc.cfg, err, tc.field)
		}
		// c was left alone: still open.
		if err := c.Close(); err != nil {
			t.Errorf("NewConn with a bad Config closed the Conn: %v", err)
		}
		if _, err := w1.Dial(&tc.cfg); !errors.Is(err, connector.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("Dial(%+v): %v, want ErrInvalidConfig naming %s", tc.cfg, err, tc.field)
		}
	}
}
