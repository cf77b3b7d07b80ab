//go:build linux

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cnlink/connector/proc"
)

// fakeProc writes a /proc-like tree for the monitor to read.
type fakeProc struct {
	t    testing.TB
	root string
}

func newFakeProc(t testing.TB) *fakeProc { return &fakeProc{t: t, root: t.TempDir()} }

func (f *fakeProc) add(pid int, files map[string]string) {
	dir := filepath.Join(f.root, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			f.t.Fatal(err)
		}
	}
}

// harness runs a monitor over a fake /proc and collects its output.
type harness struct {
	mon  *monitor
	fmt  *formatter
	recs []string
}

func newHarness(t *testing.T, fp *fakeProc, f filter, jsonOut bool) *harness {
	h := &harness{}
	u := &users{names: map[uint32]string{0: "root", 1000: "alice"}, checked: time.Now()}
	h.fmt = &formatter{users: u, json: jsonOut}
	h.mon = newMonitor(f, newProcFS(fp.root), u, func(r *record) {
		h.recs = append(h.recs, string(h.fmt.format(r)))
	})
	h.mon.needComm = jsonOut || len(f.comms) > 0
	return h
}

func (h *harness) take() []string { r := h.recs; h.recs = nil; return r }

func fork(ts uint64, parent, child int32) *proc.Event {
	return &proc.Event{Kind: proc.KindFork, Timestamp: ts, ParentPID: parent, ParentTGID: parent, PID: child, TGID: child}
}

func thread(ts uint64, tgid, tid int32) *proc.Event {
	return &proc.Event{Kind: proc.KindFork, Timestamp: ts, ParentPID: 1, ParentTGID: 1, PID: tid, TGID: tgid}
}

func execEv(ts uint64, pid int32) *proc.Event {
	return &proc.Event{Kind: proc.KindExec, Timestamp: ts, PID: pid, TGID: pid}
}

func exitEv(ts uint64, pid, tgid, parent int32, code uint32) *proc.Event {
	return &proc.Event{Kind: proc.KindExit, Timestamp: ts, PID: pid, TGID: tgid, ParentPID: parent, ParentTGID: parent, ExitCode: code, ExitSignal: 17}
}

func decode(t *testing.T, line string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("invalid JSON %q: %v", line, err)
	}
	return m
}

func TestMonitorLifecycle(t *testing.T) {
	fp := newFakeProc(t)
	fp.add(100, map[string]string{"cmdline": "bash\x00-l\x00", "cgroup": "0::/user.slice/session-1.scope\n"})
	fp.add(200, map[string]string{
		"cmdline": "ls\x00-l\x00my file\x00",
		"comm":    "ls\n",
		"cgroup":  "0::/system.slice/docker-0123456789abcdef0123456789abcdef.scope\n",
	})
	h := newHarness(t, fp, filter{kinds: kAll}, true)
	h.mon.seed([]proc.Process{{PID: 100, PPID: 1, Comm: "bash", RUID: 1000, EUID: 1000}}, nil)

	h.mon.handle(fork(1000, 100, 200))
	h.mon.handle(thread(1500, 200, 201))
	h.mon.handle(execEv(2000, 200))
	h.mon.handle(exitEv(4000, 201, 200, 0, 0))
	h.mon.handle(exitEv(5000, 200, 200, 100, 7<<8))
	got := h.take()
	if len(got) != 5 {
		t.Fatalf("got %d records, want 5:\n%s", len(got), strings.Join(got, ""))
	}
	f := decode(t, got[0])
	if f["kind"] != "fork" || f["pid"] != 200.0 || f["ppid"] != 100.0 || f["comm"] != "bash" || f["user"] != "alice" {
		t.Errorf("fork record: %v", f)
	}
	if args := f["cmdline"].([]any); len(args) != 2 || args[0] != "bash" {
		t.Errorf("fork record does not inherit the parent's command line: %v", f["cmdline"])
	}
	if f["cgroup"] != "/user.slice/session-1.scope" {
		t.Errorf("fork record cgroup %v", f["cgroup"])
	}
	c := decode(t, got[1])
	if c["kind"] != "clone" || c["thread"] != true || c["pid"] != 201.0 || c["tgid"] != 200.0 {
		t.Errorf("clone record: %v", c)
	}
	e := decode(t, got[2])
	if e["kind"] != "exec" || e["comm"] != "ls" || e["container"] != "docker:0123456789ab" || e["gone"] != nil {
		t.Errorf("exec record: %v", e)
	}
	if args := e["cmdline"].([]any); len(args) != 3 || args[2] != "my file" {
		t.Errorf("exec record cmdline %v", e["cmdline"])
	}
	te := decode(t, got[3])
	if te["kind"] != "exit" || te["thread"] != true || te["lifetime_ns"] != 2500.0 || te["lifetime_from"] != "fork" || te["exit_code"] != 0.0 {
		t.Errorf("thread exit record: %v", te)
	}
	x := decode(t, got[4])
	if x["kind"] != "exit" || x["exit_code"] != 7.0 || x["wait_status"] != 1792.0 || x["lifetime_ns"] != 4000.0 || x["comm"] != "ls" || x["signal"] != nil {
		t.Errorf("exit record: %v", x)
	}
	if _, ok := h.mon.procs[200]; ok {
		t.Error("the exited process is still in the table")
	}
	if n := h.mon.stats.counts; n["fork"] != 1 || n["clone"] != 1 || n["exec"] != 1 || n["exit"] != 1 || n["thread-exit"] != 1 {
		t.Errorf("summary counts %v", n)
	}
	if top := h.mon.stats.topForkers(5); len(top) != 1 || top[0].pid != 100 || top[0].forks != 1 || top[0].comm != "bash" {
		t.Errorf("top forkers %+v", top)
	}
	if top := h.mon.stats.topExecs(5); len(top) != 1 || top[0].program != "ls" {
		t.Errorf("top execs %+v", top)
	}
}

func TestMonitorGoneAndSignals(t *testing.T) {
	fp := newFakeProc(t)
	h := newHarness(t, fp, filter{kinds: defaultKinds}, false)
	h.mon.seed([]proc.Process{{PID: 100, PPID: 1, Comm: "sh"}}, nil)
	// pid 300 has no /proc entry: it is gone by the time of its exec.
	h.mon.handle(fork(1000, 100, 300))
	h.mon.handle(execEv(1100, 300))
	h.mon.handle(&proc.Event{Kind: proc.KindCoredump, Timestamp: 1150, PID: 300, TGID: 300, ParentPID: 100, ParentTGID: 100})
	h.mon.handle(exitEv(1200, 300, 300, 100, 11|0x80))
	// A thread's fork and exit are not shown without -e clone.
	h.mon.handle(thread(1300, 100, 101))
	h.mon.handle(exitEv(1400, 101, 100, 0, 0))
	got := h.take()
	if len(got) != 4 {
		t.Fatalf("got %d lines, want fork, exec, coredump and exit:\n%s", len(got), strings.Join(got, ""))
	}
	if !strings.Contains(got[1], "exec ") || !strings.HasSuffix(got[1], "root                                    <gone: exited before /proc could be read>\n") {
		t.Errorf("exec line does not say the process was gone: %q", got[1])
	}
	if !strings.Contains(got[2], "dumping core") {
		t.Errorf("coredump line: %q", got[2])
	}
	f := strings.Fields(got[3])
	if f[1] != "exit" || f[2] != "300" || f[3] != "100" || f[5] != "SIGSEGV" || f[6] != "core" || f[7] != "200ns" {
		t.Errorf("exit line %q: want pid 300, ppid 100, SIGSEGV core, 200ns", got[3])
	}
}

func TestMonitorSubtreeAndComm(t *testing.T) {
	fp := newFakeProc(t)
	for _, pid := range []int{500, 501, 600} {
		fp.add(pid, map[string]string{"cmdline": "x\x00", "comm": "worker\n", "cgroup": "0::/\n"})
	}
	h := newHarness(t, fp, filter{kinds: kAll}, true)
	h.mon.seed([]proc.Process{
		{PID: 1, Comm: "init"},
		{PID: 10, PPID: 1, Comm: "svc"},
		{PID: 11, PPID: 10, Comm: "svc-child"},
		{PID: 20, PPID: 1, Comm: "other"},
	}, []int32{10})
	h.mon.handle(fork(100, 11, 500)) // grandchild of the root: shown
	h.mon.handle(fork(110, 20, 600)) // elsewhere: hidden
	h.mon.handle(fork(120, 500, 501))
	h.mon.handle(execEv(130, 600))
	h.mon.handle(exitEv(140, 600, 600, 20, 0))
	var pids []float64
	for _, l := range h.take() {
		pids = append(pids, decode(t, l)["pid"].(float64))
	}
	if len(pids) != 2 || pids[0] != 500 || pids[1] != 501 {
		t.Errorf("subtree of 10 showed pids %v, want [500 501]", pids)
	}

	h2 := newHarness(t, fp, filter{kinds: kAll, comms: []string{"work*"}}, true)
	h2.mon.seed([]proc.Process{{PID: 20, PPID: 1, Comm: "other"}}, nil)
	h2.mon.handle(fork(100, 20, 600)) // comm "other": hidden
	h2.mon.handle(execEv(110, 600))   // now "worker": shown
	h2.mon.handle(&proc.Event{Kind: proc.KindComm, PID: 600, TGID: 600, Comm: [16]byte{'z'}})
	got := h2.take()
	if len(got) != 2 {
		t.Fatalf("comm filter: got %d records, want the exec and the rename away:\n%s", len(got), strings.Join(got, ""))
	}
	if r := decode(t, got[1]); r["kind"] != "comm" || r["new_comm"] != "z" || r["old_comm"] != "worker" {
		t.Errorf("comm record %v", r)
	}
}

func TestLostAndUnknownAreAlwaysShown(t *testing.T) {
	fp := newFakeProc(t)
	h := newHarness(t, fp, filter{kinds: kExec, comms: []string{"nothing"}, subtree: map[int32]bool{}}, false)
	h.mon.handle(&proc.Event{Kind: proc.KindLost, CPU: 1, Lost: 42})
	h.mon.handle(&proc.Event{Kind: proc.KindLost, CPU: proc.CPUUnknown})
	h.mon.handle(&proc.Event{Kind: proc.Kind(0x400), Raw: []byte{0xab, 0xcd}})
	got := h.take()
	if len(got) != 3 {
		t.Fatalf("got %d lines:\n%s", len(got), strings.Join(got, ""))
	}
	if !strings.Contains(got[0], "LOST") || !strings.Contains(got[0], "42 events lost on cpu 1") {
		t.Errorf("gap line %q", got[0])
	}
	if !strings.Contains(got[1], "the count is unknown") {
		t.Errorf("overrun line %q", got[1])
	}
	if !strings.Contains(got[2], "kernel event kind 0x400 payload abcd") {
		t.Errorf("unknown line %q", got[2])
	}
	if h.mon.stats.lostN != 42 || h.mon.stats.overruns != 1 || h.mon.stats.unknown != 1 {
		t.Errorf("stats lost %d overruns %d unknown %d", h.mon.stats.lostN, h.mon.stats.overruns, h.mon.stats.unknown)
	}
	h.fmt.json = true
	h.mon.handle(&proc.Event{Kind: proc.KindLost, CPU: proc.CPUUnknown})
	if r := decode(t, h.take()[0]); r["kind"] != "lost" || r["lost"] != 0.0 || r["loss"] != "overrun" || r["cpu"] != -1.0 {
		t.Errorf("JSON overrun record %v", r)
	}
}

// TestForkExitAllocs guards the cost of following a process: a fork and an
// exit of a known parent's child allocate at most the child's entry, and
// formatting allocates nothing.
func TestForkExitAllocs(t *testing.T) {
	fp := newFakeProc(t)
	fp.add(100, map[string]string{"cmdline": "bash\x00", "cgroup": "0::/\n"})
	h := newHarness(t, fp, filter{kinds: kFork | kExit}, false)
	h.mon.emit = func(r *record) { h.fmt.format(r) }
	h.mon.seed([]proc.Process{{PID: 100, PPID: 1, Comm: "bash", RUID: 1000}}, nil)
	fe, xe := fork(1, 100, 200), exitEv(2, 200, 200, 100, 0)
	h.mon.handle(fe)
	h.mon.handle(xe)
	allocs := testing.AllocsPerRun(1000, func() {
		h.mon.handle(fe)
		h.mon.handle(xe)
	})
	if allocs > 1 {
		t.Errorf("fork+exit allocated %v times, want at most 1", allocs)
	}
}

func BenchmarkForkExecExit(b *testing.B) {
	fp := newFakeProc(b)
	fp.add(200, map[string]string{"cmdline": "/bin/true\x00--flag\x00", "comm": "true\n", "cgroup": "0::/user.slice\n"})
	u := &users{names: map[uint32]string{0: "root"}, checked: time.Now()}
	f := &formatter{users: u, json: true}
	mon := newMonitor(filter{kinds: defaultKinds}, newProcFS(fp.root), u, func(r *record) { f.format(r) })
	mon.seed([]proc.Process{{PID: 100, PPID: 1, Comm: "bash"}}, nil)
	fe, ee, xe := fork(1, 100, 200), execEv(2, 200), exitEv(3, 200, 200, 100, 0)
	b.ReportAllocs()
	for b.Loop() {
		mon.handle(fe)
		mon.handle(ee)
		mon.handle(xe)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(3*b.N), "ns/event")
}

// TestPruneAfterLoss checks that after lost events the table drops the
// processes whose exits may have been lost, and keeps the living.
func TestPruneAfterLoss(t *testing.T) {
	fp := newFakeProc(t)
	fp.add(100, map[string]string{"cmdline": "a\x00"})
	h := newHarness(t, fp, filter{kinds: kAll}, true)
	h.mon.seed([]proc.Process{{PID: 100, PPID: 1, Comm: "a"}, {PID: 200, PPID: 1, Comm: "b"}}, nil)
	h.mon.handle(thread(1, 200, 201))
	h.mon.handle(thread(1, 100, 101))
	h.mon.prune() // no loss yet: nothing happens
	if len(h.mon.procs) != 2 || len(h.mon.threads) != 2 {
		t.Fatalf("pruned without a loss: %d processes, %d threads", len(h.mon.procs), len(h.mon.threads))
	}
	h.mon.handle(&proc.Event{Kind: proc.KindLost, CPU: 0, Lost: 3})
	h.mon.prune()
	if _, ok := h.mon.procs[200]; ok || len(h.mon.procs) != 1 {
		t.Errorf("process 200, gone from /proc, is still in the table: %v", h.mon.procs)
	}
	if _, ok := h.mon.threads[201]; ok || len(h.mon.threads) != 1 {
		t.Errorf("thread 201 of the gone process is still in the table: %v", h.mon.threads)
	}
}
