//go:build linux

package proctest_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/testutil"
	"github.com/cnlink/connector/proc"
	"github.com/cnlink/connector/proc/proctest"
	"github.com/google/go-cmp/cmp"
)

func TestMain(m *testing.M) {
	testutil.MainFunc(m, func(name string, _ []string) int {
		if name == "exit3" {
			return 3
		}
		return 99
	})
}

// A scenario for the fidelity test: sockets in group 1 with the filters
// that package proc and others set, in this order.
var sockets = []struct {
	name string
	reqs []sockReq
}{
	{"passive", nil},
	{"all", []sockReq{{1, 0, true}}},
	{"exec|exit", []sockReq{{1, proc.KindExec | proc.KindExit, true}}},
	{"nonzero exit", []sockReq{{1, proc.KindNonzeroExit, true}}},
	{"unknown bits only", []sockReq{{1, 0x400, true}}},
	{"every kind, no acks", []sockReq{{1, proc.KindAll, true}, {1, ^proc.KindNonzeroExit, true}}},
	{"classic", []sockReq{{1, 0, false}}},
	{"ignored", []sockReq{{1, 0, false}, {2, 0, false}}},
}

type sockReq struct {
	op    uint32
	kinds proc.Kind
	input bool
}

// errOverrun ends a scenario whose sockets overran: other traffic on group
// 1 filled a buffer, and the kernel dropped events or acknowledgements.
var errOverrun = errors.New("a socket overran")

// run plays the scenario on sockets opened by dial, with cause making the
// workload's fork, exec and exit happen, and returns what each socket got:
// the workload's events and the scenario's acknowledgements, sorted. If a
// socket overran (other traffic on group 1 filled its buffer: the kernel
// dropped events or acknowledgements), it plays the scenario again on new
// sockets, up to 5 times in all.
func run(t *testing.T, dial func() *connector.Conn, cause func() int32, quiet time.Duration) map[string][]string {
	t.Helper()
	for try := 1; ; try++ {
		got, err := runOnce(t, dial, cause, quiet)
		if err == nil {
			return got
		}
		if try == 5 {
			t.Fatalf("the scenario overran its sockets %d times in a row (other traffic on group 1): %v", try, err)
		}
		t.Logf("try %d: %v; playing the scenario again", try, err)
	}
}

func runOnce(t *testing.T, dial func() *connector.Conn, cause func() int32, quiet time.Duration) (map[string][]string, error) {
	t.Helper()
	conns := make([]*connector.Conn, len(sockets))
	for i := range sockets {
		conns[i] = dial()
	}
	nonces := map[uint32]string{}
	n := uint32(0x7e570000)
	for i, s := range sockets {
		for j, r := range s.reqs {
			var b [8]byte
			binary.NativeEndian.PutUint32(b[:], r.op)
			binary.NativeEndian.PutUint32(b[4:], uint32(r.kinds))
			d := b[:4]
			if r.input {
				d = b[:]
			}
			n++
			nonces[n+1] = fmt.Sprintf("%s request %d", s.name, j+1)
			if err := conns[i].Send(connector.Message{ID: connector.IDProc, Ack: n, Data: d}); err != nil {
				t.Fatal(err)
			}
		}
	}
	pid := cause()
	got := map[string][]string{}
	for i, s := range sockets {
		var out []string
		evs, err := drainScenario(t, conns[i], pid, s.name != "ignored", quiet)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("socket %s: %w", s.name, err)
		}
		for _, ev := range evs {
			switch {
			case ev.Kind == proc.KindNone:
				if name, ok := nonces[ev.Ack]; ok {
					out = append(out, fmt.Sprintf("ack of %s, err %d", name, ev.AckErr))
				}
			case ev.TGID == pid && ev.PID == pid:
				out = append(out, fmt.Sprintf("%v code %#x", ev.Kind, ev.ExitCode))
			}
		}
		// Acknowledgements and events may come from different CPUs, in
		// no fixed order between them: compare them as sets.
		sort.Strings(out)
		got[s.name] = out
	}
	return got, nil
}

// drainScenario reads c until the exit of pid arrived (if wantExit), else until
// quiet passes without a message. Acknowledgements of requests sent before
// the workload started are queued before its exit. An overrun ends it with
// errOverrun.
func drainScenario(t *testing.T, c *connector.Conn, pid int32, wantExit bool, quiet time.Duration) ([]proc.Event, error) {
	t.Helper()
	var out []proc.Event
	for {
		wait := quiet
		if wantExit {
			wait = 20 * time.Second
		}
		if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
			t.Fatal(err)
		}
		msgs, _, err := c.Receive()
		if errors.Is(err, os.ErrDeadlineExceeded) && !wantExit {
			return out, nil
		}
		if errors.Is(err, connector.ErrOverrun) {
			return nil, errOverrun
		}
		if err != nil {
			t.Fatalf("waiting for the workload's events: %v (so far %v)", err, out)
		}
		for _, m := range msgs {
			var ev proc.Event
			if proc.Decode(m, &ev) != nil {
				continue
			}
			out = append(out, ev)
			if wantExit && ev.Kind == proc.KindExit && ev.PID == pid {
				return out, nil
			}
		}
	}
}

// The fake's per-socket filters and acknowledgements agree with the
// kernel's: the same requests from the same sockets, and a child that
// forks, execs and exits with status 3, give each socket the same events
// and the same acknowledgements on the real kernel (Linux 6.6 and later)
// and on the fake.
func TestKernelFidelity(t *testing.T) {
	testutil.RequireProcEvents(t)
	if !testutil.KernelAtLeast(t, 6, 6) {
		t.Skip("kernel feature missing: per-socket filters need Linux 6.6 (proc's tests compare the fake's Options.Legacy)")
	}
	cfg := &connector.Config{Groups: []connector.Group{1}, Senders: connector.SendersKernelOnly, ReadBufferSize: 8 << 20}
	dialWith := func(dial func(*connector.Config) (*connector.Conn, error)) func() *connector.Conn {
		return func() *connector.Conn {
			c, err := dial(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		}
	}
	kernel := run(t, dialWith(connector.Dial), func() int32 {
		cmd := testutil.HelperCommand(t, "exit3")
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("helper: %v", err)
		}
		return int32(cmd.Process.Pid)
	}, 300*time.Millisecond)

	k := cntest.New(nil)
	a := proctest.New(k, nil)
	fake := run(t, dialWith(k.Dial), func() int32 {
		const pid = 4242
		me := int32(os.Getpid())
		a.Emit(proc.Event{Kind: proc.KindFork, PID: pid, TGID: pid, ParentPID: me, ParentTGID: me})
		a.Emit(proc.Event{Kind: proc.KindExec, PID: pid, TGID: pid})
		a.Emit(proc.Event{Kind: proc.KindExit, PID: pid, TGID: pid, ExitCode: 3 << 8, ExitSignal: 17, ParentPID: me, ParentTGID: me})
		return pid
	}, 10*time.Millisecond)
	if diff := cmp.Diff(kernel, fake); diff != "" {
		t.Errorf("per socket, what the kernel (-) and the fake (+) delivered:\n%s", diff)
	}
	t.Logf("kernel and fake agree on the %d sockets", len(kernel))
}
