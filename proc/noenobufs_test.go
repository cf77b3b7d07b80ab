package proc_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/testutil"
	"github.com/cnlink/connector/proc"
)

// TestNoENOBUFSWithSubset: NoENOBUFS with a subset of kinds and without
// ExactLoss would lose events uncounted (the kernel's filter leaves gaps,
// and no overrun report says when to read the drop counter): Listen and
// NewListener refuse it, naming both fields, before sending anything;
// with ExactLoss, or with every kind, it is accepted, and with ExactLoss
// a drop is counted although no overrun is reported.
func TestNoENOBUFSWithSubset(t *testing.T) {
	defer proc.SetNamespaceCheck(func() error { return nil })()
	bad := proc.Config{Kinds: proc.KindExec | proc.KindExit, NoENOBUFS: true}
	check := func(what string, err error, field string) {
		t.Helper()
		if !errors.Is(err, connector.ErrInvalidConfig) || !strings.Contains(fmt.Sprint(err), field) || !strings.Contains(fmt.Sprint(err), "Config.Kinds") || !strings.Contains(fmt.Sprint(err), "Config.ExactLoss") {
			t.Errorf("%s: %v; want ErrInvalidConfig naming Config.Kinds, %s and Config.ExactLoss", what, err, field)
		}
		testutil.CheckErrorShape(t, what, err, "proc")
	}
	_, err := proc.Listen(&bad)
	check("Listen", err, "Config.NoENOBUFS")

	f := newFixture(nil)
	c := f.dial(t, 4)
	defer c.Close()
	_, err = proc.NewListener(c, &bad)
	check("NewListener", err, "Config.NoENOBUFS")
	nob, err := f.k.Dial(&connector.Config{Groups: []connector.Group{1}, MessageBufferSize: proc.MessageBufferSize, NoENOBUFS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer nob.Close()
	_, err = proc.NewListener(nob, &proc.Config{Kinds: proc.KindExit})
	check("NewListener on a NoENOBUFS Conn", err, "connector.Config.NoENOBUFS")
	if reqs := f.a.Requests(); len(reqs) != 0 {
		t.Errorf("requests sent despite the refusal: %+v", reqs)
	}

	// Every kind: the drop counter is read on every gap, no refusal.
	if _, _, err := listenNoENOBUFS(t, f, 0, false); err != nil {
		t.Errorf("NoENOBUFS with every kind: %v", err)
	}
	// ExactLoss: accepted, and a drop with no overrun report is counted.
	l, _, err := listenNoENOBUFS(t, f, proc.KindExit, true)
	if err != nil {
		t.Fatalf("NoENOBUFS, a subset and ExactLoss: %v", err)
	}
	if l.Mode() != proc.ModeUserFilter {
		t.Errorf("Mode %v, want %v", l.Mode(), proc.ModeUserFilter)
	}
	f.emit(t, exit(0, 1, 0))
	f.a.Drop(0, 3)
	f.emit(t, exit(0, 2, 0))
	got := nextStrings(t, l, nil, 3)
	if len(got) != 3 || !strings.HasPrefix(got[1], "lost cpu=0 ") || !strings.HasSuffix(got[1], " lost=3") {
		t.Errorf("events %q; want an exit, 3 lost on cpu 0, an exit", got)
	}
	if st := l.Stats(); st.Lost != 3 || st.Overruns != 0 {
		t.Errorf("Stats %+v, want Lost 3 and no overrun", st)
	}
}

// listenNoENOBUFS subscribes a NoENOBUFS Listener for kinds on a new Conn
// of f.
func listenNoENOBUFS(t *testing.T, f *fixture, kinds proc.Kind, exact bool) (*proc.Listener, *connector.Conn, error) {
	t.Helper()
	c := f.dial(t, 4)
	l, err := f.listenOn(t, c, &proc.Config{Kinds: kinds, NoENOBUFS: true, ExactLoss: exact})
	return l, c, err
}

// TestListenKernelWaitChecks: Listen with Config.KernelWait keeps its
// namespace pre-check (which a caller who dials the Conn with
// connector.Config.KernelWait and calls NewListener loses), and RawWait
// without KernelWait is refused as connector.Dial refuses it.
func TestListenKernelWaitChecks(t *testing.T) {
	restore := proc.SetNamespaceCheck(func() error { return proc.ErrNamespace })
	_, err := proc.Listen(&proc.Config{KernelWait: true})
	restore()
	if !errors.Is(err, proc.ErrNamespace) {
		t.Errorf("Listen with KernelWait outside the initial namespaces: %v; want ErrNamespace", err)
	}
	_, err = proc.Listen(&proc.Config{RawWait: true})
	if !errors.Is(err, connector.ErrInvalidConfig) && !errors.Is(err, proc.ErrNoProcEvents) && !errors.Is(err, proc.ErrNamespace) && !errors.Is(err, connector.ErrNotSupported) {
		t.Errorf("Listen with RawWait alone: %v; want ErrInvalidConfig", err)
	}
	testutil.CheckErrorShape(t, "Listen with RawWait alone", err, "proc")
}

// TestKindsWithoutKind: a Config.Kinds with no event kind in it (KindLost
// alone, a bit the kernel does not define) used to mean every kind; Listen
// and NewListener refuse it, naming the field, before sending anything.
// KindLost next to a kind is accepted and ignored.
func TestKindsWithoutKind(t *testing.T) {
	defer proc.SetNamespaceCheck(func() error { return nil })()
	f := newFixture(nil)
	for _, k := range []proc.Kind{proc.KindLost, 0x400, proc.KindLost | 0x400} {
		cfg := proc.Config{Kinds: k}
		_, err := proc.Listen(&cfg)
		if !errors.Is(err, connector.ErrInvalidConfig) || !strings.Contains(fmt.Sprint(err), "Config.Kinds") {
			t.Errorf("Listen(Kinds %v): %v; want ErrInvalidConfig naming Config.Kinds", k, err)
		}
		testutil.CheckErrorShape(t, "Listen", err, "proc")
		c := f.dial(t, 4)
		_, err = proc.NewListener(c, &cfg)
		c.Close()
		if !errors.Is(err, connector.ErrInvalidConfig) {
			t.Errorf("NewListener(Kinds %v): %v; want ErrInvalidConfig", k, err)
		}
	}
	if reqs := f.a.Requests(); len(reqs) != 0 {
		t.Errorf("requests sent despite the refusal: %+v", reqs)
	}
	l, _ := f.mustListen(t, &proc.Config{Kinds: proc.KindLost | proc.KindExec})
	if l.Kinds() != proc.KindExec {
		t.Errorf("Kinds() = %v, want %v", l.Kinds(), proc.KindExec)
	}
}

// TestNoENOBUFSSetAfterDial: NETLINK_NO_ENOBUFS turned on with
// Conn.SetNoENOBUFS after Dial, where the Conn's Config does not show it,
// is refused with a subset of kinds and without ExactLoss as the
// Dial-time option is, naming the fields, before anything is sent. With
// ExactLoss it is accepted, and the Listener knows the socket drops
// silently: drops that no gap has shown yet are reported when a wait ends,
// without an overrun (before the fix, the Listener read the Dial-time
// Config, never read the drop counter there, and reported nothing).
func TestNoENOBUFSSetAfterDial(t *testing.T) {
	defer proc.SetNamespaceCheck(func() error { return nil })()
	f := newFixture(nil)
	c := f.dial(t, 4)
	if err := c.SetNoENOBUFS(true); err != nil {
		t.Fatal(err)
	}
	_, err := proc.NewListener(c, &proc.Config{Kinds: proc.KindExec})
	for _, want := range []string{"Config.Kinds", "Config.ExactLoss", "Conn.SetNoENOBUFS"} {
		if !errors.Is(err, connector.ErrInvalidConfig) || !strings.Contains(fmt.Sprint(err), want) {
			t.Errorf("NewListener on a Conn with SetNoENOBUFS(true): %v; want ErrInvalidConfig naming %s", err, want)
		}
	}
	testutil.CheckErrorShape(t, "NewListener", err, "proc")
	if reqs := f.a.Requests(); len(reqs) != 0 {
		t.Errorf("requests sent despite the refusal: %+v", reqs)
	}
	// Turned off again: nothing to refuse.
	c2 := f.dial(t, 4)
	if err := c2.SetNoENOBUFS(true); err != nil {
		t.Fatal(err)
	}
	if err := c2.SetNoENOBUFS(false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.listenOn(t, c2, &proc.Config{Kinds: proc.KindExec}); err != nil {
		t.Errorf("NewListener after SetNoENOBUFS(true) then (false): %v", err)
	}

	l, err := f.listenOn(t, c, &proc.Config{Kinds: proc.KindExit, ExactLoss: true})
	if err != nil {
		t.Fatalf("NewListener with ExactLoss on a Conn with SetNoENOBUFS(true): %v", err)
	}
	f.emit(t, exit(0, 1, 0)) // cpu 0's baseline
	got := nextStrings(t, l, nil, 1)
	f.a.Drop(0, 3) // no overrun report, and nothing more from cpu 0
	if err := l.SetDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	var ev proc.Event
	if err := l.Next(&ev); err != nil {
		t.Fatalf("Next after the deadline: %v; want the 3 silent drops first (got %q before)", err, got)
	}
	if s := ev.String(); s != "lost cpu=? seq=0 lost=3" {
		t.Errorf("the record at the end of the wait: %q; want the 3 drops", s)
	}
	if st := l.Stats(); st.Lost != 3 || st.Overruns != 0 {
		t.Errorf("Stats %+v; want Lost 3 and no overrun", st)
	}
}
