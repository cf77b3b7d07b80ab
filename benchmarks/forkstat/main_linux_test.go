//go:build linux

package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestFindNetlink(t *testing.T) {
	// The layout of /proc/net/netlink (net/netlink/af_netlink.c,
	// netlink_seq_show), with a connector socket of port 4242 in group 1
	// that dropped 17 messages, one not in group 1, and another protocol.
	const table = `sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode
ffff8cd2c1a4b800 0   1          00000550 0        0        0     2        0        1357
ffff8cd2c3b6f000 11  4242       00000001 0        0        0     2        17       98765
ffff8cd2c3b6f800 11  4243       00100000 0        0        0     2        3        98766
ffff8cd2c3b6e000 16  4242       00000001 0        0        0     2        99       98767
`
	if d, ok := findNetlink(strings.NewReader(table), 4242); !ok || d != 17 {
		t.Errorf("port 4242: got %d, %v; want 17 drops", d, ok)
	}
	if _, ok := findNetlink(strings.NewReader(table), 4243); ok {
		t.Error("port 4243 is not in group 1 and must not count as a process-event socket")
	}
	if _, ok := findNetlink(strings.NewReader(table), 1); ok {
		t.Error("port 1 has no connector socket")
	}
}

func TestSampleMath(t *testing.T) {
	s := sample{events: 1000, drops: 200, cpu: 8 * time.Millisecond}
	if s.received() != 800 || s.perEvent() != 10 {
		t.Errorf("received %d, per event %v µs; want 800 and 10", s.received(), s.perEvent())
	}
	if s := (sample{events: 5, drops: 9, cpu: time.Second}); s.received() != 0 || s.perEvent() != 0 {
		t.Errorf("more drops than events: received %d, per event %v", s.received(), s.perEvent())
	}
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median of 3 values = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median of 4 values = %v", m)
	}
}

func TestProcCPU(t *testing.T) {
	// The process CPU-time clock of this process moves as it works.
	pid := os.Getpid()
	a, err := procCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, err := procCPU(pid)
		if err != nil {
			t.Fatal(err)
		}
		if b > a {
			return
		}
	}
	t.Error("the CPU clock did not advance in 10 s of busy work")
}

// TestStorms runs each storm small, in this process: each makes the tasks
// asked for.
func TestStorms(t *testing.T) {
	if _, err := os.Stat("/bin/true"); err != nil {
		t.Skip("no /bin/true for the exec storm")
	}
	for _, kind := range []string{"fork", "threads", "exec"} {
		n, err := runStorm(kind, 20, "/bin/true")
		if err != nil {
			t.Skipf("%s: %v", kind, err)
		}
		if n != 20 {
			t.Errorf("%s storm made %d tasks, want 20", kind, n)
		}
	}
}
