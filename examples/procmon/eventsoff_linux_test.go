//go:build linux

package main

import (
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/testutil"
)

// sendProcOps sends PROC_CN_MCAST_* requests (include/uapi/linux/cn_proc.h:
// 1 LISTEN, 2 IGNORE; 3 is no operation, which the kernel answers with
// EINVAL) to the process events connector, pairs times in the order given.
func sendProcOps(t *testing.T, pairs int, ops ...uint32) {
	t.Helper()
	c, err := connector.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range pairs {
		for j, op := range ops {
			b := binary.NativeEndian.AppendUint32(nil, op)
			if err := c.Send(connector.Message{ID: connector.IDProc, Ack: uint32(i*len(ops) + j + 1), Data: b}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestKernelEventsOffRearmed: when the kernel's listener count is driven
// below 1 (here by IGNORE requests, each after a request that was not one,
// which lowers it on every kernel: as root, and from 6.6 as any user), the
// kernel makes no process events at all. procmon's check finds that within
// -check-events, says so, turns events back on, and then shows the exec of
// a process the test runs; its closing line does not claim "0 lost".
func TestKernelEventsOffRearmed(t *testing.T) {
	skipUnlessListen(t)
	if !testutil.InMatrix() {
		t.Skip("runs only in the kernel matrix: it switches process events off for every process on the machine")
	}
	if major, minor := testutil.KernelVersion(t); (major < 6 || major == 6 && minor < 6) && os.Geteuid() != 0 {
		t.Skip("privilege missing: before Linux 6.6, switching events off and turning them back on for the tests that follow need CAP_NET_ADMIN")
	}
	mon := startMonitor(t, "--json", "-check-events", "200ms", "-p", strconv.Itoa(os.Getpid()))
	// The count is not known (tests before may have left it high): lower
	// it 32 at a time until procmon says it found events off.
	const batch = 32
	lowered := 0
	// Turn events back on for the tests that follow, whatever happens:
	// a LISTEN raises the count after a request that was not one.
	t.Cleanup(func() { sendProcOps(t, lowered+batch, 1, 3) })
	warned := func(s string) bool { return strings.Contains(s, "stopped making process events") }
	for {
		sendProcOps(t, batch, 3, 2)
		lowered += batch
		if _, err := mon.Stderr.WaitFrom(0, time.Second, warned); err == nil {
			break
		}
		if lowered >= 64*batch {
			t.Fatalf("procmon did not warn after the listener count was lowered by %d: stderr:\n%s", lowered, mon.Stderr)
		}
	}
	mon.Stderr.Find(t, timeout, "events on again", func(s string) bool { return strings.Contains(s, "process events are on again") })
	retry(t, func() error {
		mark := mon.Stdout.Len()
		c := helperCmd(t, "exit7")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		_ = c.Wait()
		pid := c.Process.Pid
		_, err := awaitJSON(t, mon, mark, "the exec after events were turned back on", func(e jsonEvent) bool { return e.Kind == "exec" && e.PID == pid })
		return err
	})
	mon.Signal(t, os.Interrupt)
	mon.Wait(t, timeout)
	var closing string
	for _, l := range strings.Split(mon.Stderr.String(), "\n") {
		if strings.Contains(l, " received, ") {
			closing = l
		}
	}
	if strings.Contains(closing, " 0 lost") || !strings.Contains(closing, "switched off for the whole machine") {
		t.Errorf("closing line %q: want the switch-off, and no \"0 lost\"", closing)
	}
}
