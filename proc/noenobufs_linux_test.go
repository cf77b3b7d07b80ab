package proc

import (
	"errors"
	"os"
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
