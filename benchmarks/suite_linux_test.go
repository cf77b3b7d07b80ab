//go:build linux

package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

// The suite re-executes its own binary for every child; under go test that
// binary is the test binary, so TestMain hands child modes to runChild.
func TestMain(m *testing.M) {
	if runChild() {
		return
	}
	os.Exit(m.Run())
}

// TestSuiteSmoke runs every phase of the suite briefly against the real
// kernel and checks that each contestant measured what it was meant to, that
// the fast paths allocate nothing per event, and that no process is left.
func TestSuiteSmoke(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: CAP_NET_ADMIN for SO_RCVBUFFORCE and unicast, and the initial namespaces for proc events")
	}
	if _, err := cCompiler(); err != nil {
		t.Skipf("the storm generator and the C contestants need a C compiler: %v", err)
	}
	if _, err := os.Stat("/proc/net/connector"); err != nil {
		t.Skipf("no netlink connector in this network namespace: %v", err)
	}
	var out bytes.Buffer
	start := time.Now()
	ms, err := runSuite([]string{"-q", "-duration", "300ms", "-drain-events", "20000", "-drain-rounds", "1",
		"-unicast-duration", "200ms", "-unicast-rounds", "1", "-payloads", "16,4096", "-timeout", "3m", "-nice", "0"}, &out)
	if err != nil {
		t.Fatalf("suite: %v\n%s", err, out.String())
	}
	t.Logf("suite ran in %v:\n%s", time.Since(start), out.String())

	rows := map[string]map[string]measure{}
	for _, m := range ms {
		if rows[m.Section] == nil {
			rows[m.Section] = map[string]measure{}
		}
		rows[m.Section][m.Row] = m
	}
	for _, s := range []string{"storm", "drain", "drain-alone", "shared", "shared-4m", "shared-noenobufs", "alone", "alone-4m", "unicast-16", "unicast-4096"} {
		if len(rows[s]) == 0 {
			t.Errorf("no results for phase %s", s)
		}
	}
	if r := rows["storm"]["storm alone"].Vals["rate"]; r <= 0 {
		t.Errorf("storm rate %v, want > 0", r)
	}
	for _, c := range allContestants {
		if c == "proc" && !procAvailable {
			continue
		}
		for _, s := range []string{"drain", "drain-alone"} {
			d, ok := rows[s][c]
			if !ok {
				t.Errorf("%s: no row for %s", s, c)
				continue
			}
			// The drain buffer is large: every queued event must arrive.
			if got, want := d.Vals["received"], d.Vals["expected"]; got != want || want == 0 {
				t.Errorf("%s: %s received %v storm events, want %v", s, c, got, want)
			}
			if d.Vals["rate"] <= 0 || d.Vals["cpu"] <= 0 {
				t.Errorf("%s: %s has no drain rate or CPU time: %v", s, c, d.Vals)
			}
		}
		for _, s := range []string{"shared", "alone"} {
			if l, ok := rows[s][c]; !ok || l.Vals["received"] == 0 {
				if peerFailed(out.String(), s, c) {
					// Another library's receiver failing is its own
					// problem, which the suite reports under "Failed
					// measurements"; ours must never fail.
					t.Logf("%s: the peer contestant %s failed, as the suite reports", s, c)
					continue
				}
				t.Errorf("%s: %s received no storm events: %v", s, c, l.Vals)
			}
		}
	}
	// The zero-allocation paths, measured in their own processes.
	for _, c := range []string{"go-recvmmsg", "raw", "connector", "proc"} {
		if c == "proc" && !procAvailable {
			continue
		}
		if a := rows["drain"][c].Vals["allocs"]; a >= 0.002 {
			t.Errorf("drain: %s allocates %.3f times per event, want 0", c, a)
		}
	}
	for s, rs := range rows {
		if !strings.HasPrefix(s, "unicast-") {
			continue
		}
		for n, r := range rs {
			if r.Vals["msgs"] <= 0 || r.Vals["delivered"] != 100 {
				t.Errorf("%s %s: %.0f msgs/s, %.2f%% delivered; want > 0 and 100%%", s, n, r.Vals["msgs"], r.Vals["delivered"])
			}
		}
		if a := rs["connector (Reader)"].Vals["recv_allocs"]; a >= 0.01 {
			t.Errorf("%s: the connector Reader allocates %.3f times per message, want 0", s, a)
		}
	}

	childrenMu.Lock()
	left := len(children)
	childrenMu.Unlock()
	if left != 0 {
		t.Errorf("%d child processes still registered after the suite", left)
	}
}

// peerFailed reports whether the suite's report lists a failed measurement
// of phase for c, and c is another library's receiver (not ours, nor a
// reference loop).
func peerFailed(report, phase, c string) bool {
	if c != "vishvananda" && c != "mdlayher" {
		return false
	}
	return strings.Contains(report, "\n* "+phase+": "+c+": ")
}
