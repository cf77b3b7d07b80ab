package proc

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cnlink/connector"
)

// TestIntegrationNoENOBUFSSubset: on the real kernel, NoENOBUFS with a
// subset of kinds is refused unless ExactLoss is set; with ExactLoss,
// events dropped while the receive buffer is full, which the kernel does
// not report (no ENOBUFS), are counted: Stats.Lost reaches the socket's
// drop count once every CPU has sent another message.
func TestIntegrationNoENOBUFSSubset(t *testing.T) {
	kinds := KindExec | KindExit
	if _, err := Listen(&Config{Kinds: kinds, NoENOBUFS: true}); !errors.Is(err, connector.ErrInvalidConfig) {
		t.Fatalf("Listen with NoENOBUFS and %v: %v; want ErrInvalidConfig", kinds, err)
	}
	l := listen(t, &Config{Kinds: kinds, NoENOBUFS: true, ExactLoss: true})
	if err := l.c.SetBPF(kernelOnlyFilter()); err != nil {
		t.Fatal(err)
	}
	var ev Event
	// readAll reads until d passes, after making every CPU this process
	// may run on send a message: each CPU's gaps up to it are then seen.
	readAll := func(d time.Duration) []int {
		t.Helper()
		cpus := pokeCPUs(t)
		if err := l.SetDeadline(time.Now().Add(d)); err != nil {
			t.Fatal(err)
		}
		for {
			err := l.Next(&ev)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return cpus
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	// Every CPU's first message sets its baseline.
	cpus := readAll(300 * time.Millisecond)
	exact := len(cpus) == onlineCPUs(t)
	lost0, drops0 := l.Stats().Lost, mustDrops(t, l)

	if err := l.SetReadBuffer(1); err != nil {
		t.Fatal(err)
	}
	for range 8 {
		runHelperProc(t, "exit3")
	}
	if err := l.SetReadBuffer(8 << 20); err != nil {
		t.Fatal(err)
	}
	drops := mustDrops(t, l) - drops0
	if drops == 0 {
		t.Fatal("no drop provoked with the smallest receive buffer")
	}
	deadline := time.Now().Add(eventTimeout)
	for {
		readAll(200 * time.Millisecond)
		lost := l.Stats().Lost - lost0
		if lost >= drops {
			// Gaps count what the socket dropped and what the kernel
			// lost before any socket (and later drops): at least drops.
			t.Logf("%d dropped (sk_drops), %d counted lost; stats %+v", drops, lost, l.Stats())
			break
		}
		if !exact && lost > 0 {
			t.Logf("this process may not run on every CPU: %d lost events counted, %d dropped", lost, drops)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counted %d lost events, the kernel dropped %d; stats %+v", lost, drops, l.Stats())
		}
	}
	if st := l.Stats(); st.Overruns != 0 {
		t.Errorf("%d overruns reported with NoENOBUFS, want none", st.Overruns)
	}
}

// TestIntegrationPendingLoss: the user's case of a monitor that goes quiet
// after a burst: with a small receive buffer and children run unread, the
// drops of CPUs that send nothing afterwards used to stay unreported. When
// the wait ends at the deadline, the Listener reports them: Stats.Lost
// equals the rise of the socket's drop counter, never more.
func TestIntegrationPendingLoss(t *testing.T) {
	l := listen(t, &Config{ReadBufferSize: 4096})
	// Keep userspace multicasts out, so that the drops are process events.
	if err := l.c.SetBPF(kernelOnlyFilter()); err != nil {
		t.Fatal(err)
	}
	lost0, drops0 := l.Stats().Lost, mustDrops(t, l)
	for range 8 {
		runHelperProc(t, "exit3")
	}
	prev := mustDrops(t, l) - drops0
	if prev == 0 {
		t.Fatal("no drop provoked with a 4096-byte receive buffer")
	}
	var ev Event
	deadline := time.Now().Add(eventTimeout)
	for {
		if err := l.SetDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		var err error
		for err == nil {
			err = l.Next(&ev)
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal(err)
		}
		lost, drops := l.Stats().Lost-lost0, mustDrops(t, l)-drops0
		if lost > drops {
			t.Fatalf("%d counted lost, more than the %d the kernel dropped: counted twice; stats %+v", lost, drops, l.Stats())
		}
		if lost == drops {
			t.Logf("%d dropped, %d counted lost by the end of the wait; stats %+v", drops, lost, l.Stats())
			return
		}
		// Only a drop during this wait, after the Listener read the
		// counter, excuses a difference: the next wait's end reports it.
		if drops == prev {
			t.Fatalf("%d counted lost when the wait ended, the kernel dropped %d, none of them during the wait; stats %+v", lost, drops, l.Stats())
		}
		prev = drops
		if time.Now().After(deadline) {
			t.Fatalf("%d counted lost, the kernel dropped %d; stats %+v", lost, drops, l.Stats())
		}
	}
}

// TestIntegrationListenKernelWait: Listen with Config.KernelWait opens its
// socket with connector.Config.KernelWait and delivers events: the exit of
// a child of ours.
func TestIntegrationListenKernelWait(t *testing.T) {
	l := listen(t, &Config{Kinds: KindExit, KernelWait: true})
	if !l.c.Config().KernelWait {
		t.Fatal("the Listener's Conn was not dialed with KernelWait")
	}
	pid := runHelperProc(t, "exit3")
	if err := l.SetDeadline(time.Now().Add(eventTimeout)); err != nil {
		t.Fatal(err)
	}
	var ev Event
	for {
		if err := l.Next(&ev); err != nil {
			t.Fatalf("waiting for the exit of %d: %v", pid, err)
		}
		if ev.Kind == KindExit && ev.PID == pid {
			if ws := ev.WaitStatus(); ws.ExitStatus() != 3 {
				t.Errorf("exit of %d: %v, want exit status 3", pid, ws)
			}
			return
		}
	}
}

// TestIntegrationNoENOBUFSSetAfterDial: on the real kernel, a Conn on which
// SetNoENOBUFS(true) was called after Dial (its Config does not show it) is
// refused by NewListener with a subset of kinds and without ExactLoss,
// naming the fields, as a Conn dialled with Config.NoENOBUFS is; with
// ExactLoss it is accepted, and the Listener knows that the socket drops
// without reporting (it reads the drop counter at the end of every wait).
func TestIntegrationNoENOBUFSSetAfterDial(t *testing.T) {
	c, err := connector.Dial(&connector.Config{MessageBufferSize: MessageBufferSize, Senders: connector.SendersKernelOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetNoENOBUFS(true); err != nil {
		t.Fatal(err)
	}
	_, err = NewListener(c, &Config{Kinds: KindExec})
	for _, want := range []string{"Config.Kinds", "Config.ExactLoss", "Conn.SetNoENOBUFS"} {
		if !errors.Is(err, connector.ErrInvalidConfig) || !strings.Contains(fmt.Sprint(err), want) {
			t.Errorf("NewListener(Kinds: KindExec) after SetNoENOBUFS(true): %v; want ErrInvalidConfig naming %s", err, want)
		}
	}
	l, err := NewListener(c, &Config{Kinds: KindExec, ExactLoss: true})
	requireListener(t, "NewListener with ExactLoss after SetNoENOBUFS(true)", err)
	defer l.Close()
	if !l.loss.silent {
		t.Error("the Listener expects overrun reports on a socket with NETLINK_NO_ENOBUFS on")
	}
}
