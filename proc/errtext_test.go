package proc_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/testutil"
	"github.com/cnlink/connector/proc"
	"github.com/cnlink/connector/proc/proctest"
)

// TestErrorTexts walks the errors of NewListener and the Listener's methods
// for doubled words and prefixes: one "proc:" or "connector:" prefix each.
func TestErrorTexts(t *testing.T) {
	defer proc.SetNamespaceCheck(func() error { return nil })()
	var errs []error
	add := func(_ any, err error) { errs = append(errs, err) }
	f := newFixture(nil)
	add(proc.NewListener(nil, nil))
	for _, cfg := range []proc.Config{{ReadBufferSize: -1}, {AckTimeout: -1}, {BatchSize: -1}, {NetNS: 3}} {
		add(proc.NewListener(f.dial(t, 4), &cfg))
	}
	anyConn, err := f.k.Dial(&connector.Config{Senders: connector.SendersAny, Groups: []connector.Group{1}})
	if err != nil {
		t.Fatal(err)
	}
	add(proc.NewListener(anyConn, nil))
	small, err := f.k.Dial(&connector.Config{MessageBufferSize: connector.MinMessageBufferSize})
	if err != nil {
		t.Fatal(err)
	}
	add(proc.NewListener(small, nil))
	noAgent, err := cntest.New(nil).Dial(&connector.Config{Groups: []connector.Group{1}})
	if err != nil {
		t.Fatal(err)
	}
	add(proc.NewListener(noAgent, nil))
	silent := newFixture(&proctest.Options{Silent: true})
	add(proc.NewListener(silent.dial(t, 4), &proc.Config{AckTimeout: 10 * time.Millisecond}))
	c := f.dial(t, 4)
	l, err := proc.NewListener(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	add(proc.NewListener(c, nil))
	l.Close()
	errs = append(errs, l.Close())
	add(l.Drops())
	var ev proc.Event
	errs = append(errs, l.Next(&ev))
	errs = append(errs, l.Flush(), l.SetDeadline(time.Time{}), l.SetReadBuffer(1<<20))
	add(l.ReadBuffer())
	// A closed Conn, a receive past the deadline.
	closed := f.dial(t, 4)
	closed.Close()
	add(proc.NewListener(closed, nil))
	l2, err := proc.NewListener(f.dial(t, 4), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	_ = l2.SetDeadline(time.Now().Add(-time.Second))
	err = l2.Next(&ev)
	if te, ok := err.(interface{ Timeout() bool }); !ok || !te.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Next past the deadline: %v (%T); want a Timeout() error matching os.ErrDeadlineExceeded", err, err)
	}
	errs = append(errs, err)
	for i, err := range errs {
		testutil.CheckErrorShape(t, fmt.Sprintf("operation %d", i), err, "proc")
	}
}

// TestNewListenerTexts: what NewListener says about a closed Conn, a fake
// kernel without the agent and a silent agent is true and in proc's words.
func TestNewListenerTexts(t *testing.T) {
	defer proc.SetNamespaceCheck(func() error { return nil })()
	f := newFixture(nil)
	c := f.dial(t, 4)
	c.Close()
	_, err := proc.NewListener(c, nil)
	if !errors.Is(err, connector.ErrClosed) || !strings.HasPrefix(err.Error(), "proc: new listener: ") || !strings.Contains(err.Error(), "must be open") {
		t.Errorf("on a closed Conn: %v; want proc: new listener: saying c must be open, matching ErrClosed", err)
	}

	noAgent, err := cntest.New(nil).Dial(&connector.Config{Groups: []connector.Group{1}})
	if err != nil {
		t.Fatal(err)
	}
	defer noAgent.Close()
	_, err = proc.NewListener(noAgent, nil)
	if !errors.Is(err, proc.ErrNoProcEvents) || !errors.Is(err, connector.ErrNoAgent) {
		t.Errorf("without the agent: %v; want ErrNoProcEvents and connector.ErrNoAgent", err)
	}
	if s := fmt.Sprint(err); !strings.HasPrefix(s, "proc: new listener: ") || strings.Contains(s, "/proc/net/connector") || strings.Count(s, "CONFIG_PROC_EVENTS") != 1 {
		t.Errorf("without the agent: %q; want proc context, no /proc/net/connector (a fake kernel), CONFIG_PROC_EVENTS once", s)
	}

	// A silent agent: each request waits AckTimeout, and the text says how
	// many waited, and how long in all.
	silent := newFixture(&proctest.Options{Silent: true})
	const ack = 50 * time.Millisecond
	start := time.Now()
	_, err = proc.NewListener(silent.dial(t, 4), &proc.Config{AckTimeout: ack})
	took := time.Since(start)
	if !errors.Is(err, proc.ErrNoAck) {
		t.Fatalf("silent agent: %v, want ErrNoAck", err)
	}
	n := len(silent.a.Requests())
	if n < 1 {
		t.Fatalf("silent agent: %d requests", n)
	}
	if took < time.Duration(n)*ack {
		t.Errorf("silent agent: failed after %v, before %d waits of %v", took, n, ack)
	}
	want := fmt.Sprintf("within %v", ack)
	if n > 1 {
		want = fmt.Sprintf("to any of %d requests, each waited for %v (%v in all", n, ack, time.Duration(n)*ack)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("silent agent: %d requests took %v; the error %q does not say %q", n, took, err, want)
	}
}

// wantPanic fails t unless f panics with a string that contains want.
func wantPanic(t *testing.T, what, want string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		v := recover()
		if s, ok := v.(string); !ok || !strings.Contains(s, want) {
			t.Errorf("%s: panicked with %v, want a message containing %q", what, v, want)
		}
	}()
	f()
}

// TestNil: nil arguments to the entry points of proc and proctest give an
// error, or, for proctest's test helpers that return none, a panic whose
// message says what is nil; never a nil dereference.
func TestNil(t *testing.T) {
	defer proc.SetNamespaceCheck(func() error { return nil })()
	if _, err := proc.NewListener(nil, nil); err == nil || !strings.Contains(err.Error(), "nil") {
		t.Errorf("NewListener(nil): %v", err)
	}
	err := proc.Decode(proctest.Message(&proc.Event{Kind: proc.KindExec}, 1), nil)
	testutil.CheckErrorShape(t, "Decode into nil", err, "proc")
	f := newFixture(nil)
	l, err := proc.NewListener(f.dial(t, 4), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f.a.Emit(proc.Event{Kind: proc.KindExec, PID: 7, TGID: 7})
	err = l.Next(nil)
	testutil.CheckErrorShape(t, "Next into nil", err, "proc")
	var ev proc.Event
	if err := l.Next(&ev); err != nil || ev.Kind != proc.KindExec || ev.PID != 7 {
		t.Errorf("Next after Next(nil): %v, %v; want the exec event it did not read", ev, err)
	}
	wantPanic(t, "proctest.New(nil, nil)", "proctest: New: the *cntest.Kernel is nil", func() { proctest.New(nil, nil) })
	wantPanic(t, "proctest.Message(nil)", "proctest: Message: the *proc.Event is nil", func() { proctest.Message(nil, 1) })
	wantPanic(t, "proctest.AppendEvent(nil)", "proctest: AppendEvent: the *proc.Event is nil", func() { proctest.AppendEvent(nil, nil) })
}
