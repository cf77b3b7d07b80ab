//go:build linux

package main

import (
	"encoding/hex"
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
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			f.t.Fatal(err)
		}
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
	// Other harnesses of the test may share fp and be open still.
	before := fdsTo(t, fp.root)
	u := &users{names: map[uint32]string{0: "root", 1000: "alice"}, checked: time.Now()}
	h.fmt = &formatter{users: u, json: jsonOut}
	h.mon = newMonitor(f, newProcFS(fp.root), u, func(r *record) {
		h.recs = append(h.recs, string(h.fmt.format(r)))
	})
	h.mon.needComm = jsonOut || len(f.comms) > 0
	t.Cleanup(func() {
		h.mon.fs.Close()
		if n := fdsTo(t, fp.root); n > before {
			t.Errorf("%d descriptors of the fake /proc %s open after the harness was closed, %d before it was made", n, fp.root, before)
		}
	})
	return h
}

// fdsTo counts this process's open descriptors of the file at path.
func fdsTo(t testing.TB, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("listing open descriptors: %v", err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == path {
			n++
		}
	}
	return n
}

// TestProcFSClose: a procFS holds one descriptor of its root until Close,
// none after it, and still reads (by whole paths) after Close; a second
// Close does nothing.
func TestProcFSClose(t *testing.T) {
	fp := newFakeProc(t)
	fp.add(42, map[string]string{"comm": "worker\n"})
	fs := newProcFS(fp.root)
	if n := fdsTo(t, fp.root); n != 1 {
		t.Fatalf("an open procFS holds %d descriptors of its root, want 1", n)
	}
	fs.Close()
	if n := fdsTo(t, fp.root); n != 0 {
		t.Fatalf("a closed procFS holds %d descriptors of its root, want 0", n)
	}
	fs.Close()
	b, err := fs.read(42, "comm")
	if err != nil || string(b) != "worker\n" {
		t.Errorf("a read after Close: %q, %v; want %q", b, err, "worker\n")
	}
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
	h.mon.handle(exitEv(4000, 201, 200, 0, 0))
	h.mon.handle(execEv(4500, 200))
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
	e := decode(t, got[3])
	if e["kind"] != "exec" || e["comm"] != "ls" || e["container"] != "docker:0123456789ab" || e["gone"] != nil {
		t.Errorf("exec record: %v", e)
	}
	if args := e["cmdline"].([]any); len(args) != 3 || args[2] != "my file" {
		t.Errorf("exec record cmdline %v", e["cmdline"])
	}
	te := decode(t, got[2])
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
	if !strings.Contains(got[1], "exec ") || !strings.HasSuffix(got[1], "root                                    <exited before its command line could be read>\n") {
		t.Errorf("exec line does not say the process was gone: %q", got[1])
	}
	if !strings.Contains(got[2], "core-dump signal") || strings.Contains(got[2], "dumping") {
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
	b.Cleanup(mon.fs.Close)
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

// jsonRecords decodes every record.
func jsonRecords(t *testing.T, lines []string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range lines {
		out = append(out, decode(t, l))
	}
	return out
}

func exits(recs []map[string]any, pid float64) (process, threads []map[string]any) {
	for _, r := range recs {
		if r["kind"] == "exit" && r["pid"] == pid {
			if r["thread"] == true {
				threads = append(threads, r)
			} else {
				process = append(process, r)
			}
		}
	}
	return process, threads
}

// TestThreadGroupLifetime: the main thread exits first (pthread_exit), a
// thread exits last with status 5: the process ends then, once, with 5.
func TestThreadGroupLifetime(t *testing.T) {
	fp := newFakeProc(t)
	h := newHarness(t, fp, filter{kinds: kAll}, true)
	h.mon.seed([]proc.Process{{PID: 100, PPID: 1, Comm: "bash"}}, []int32{100})
	h.mon.handle(fork(1000, 100, 200))
	h.mon.handle(thread(1100, 200, 201))
	h.mon.handle(thread(1200, 200, 202))
	h.mon.handle(exitEv(2000, 200, 200, 100, 0))
	h.mon.handle(exitEv(2500, 202, 200, 0, 0))
	if !h.mon.f.subtree[200] || h.mon.procs[200] == nil {
		t.Fatal("the process left the table at its main thread's exit, with a thread alive")
	}
	h.mon.handle(exitEv(3000, 201, 200, 0, 5<<8))
	recs := jsonRecords(t, h.take())
	proc, threads := exits(recs, 200)
	if len(proc) != 1 || proc[0]["exit_code"] != 5.0 || proc[0]["lifetime_ns"] != 2000.0 || proc[0]["lifetime_from"] != "fork" || proc[0]["ppid"] != 100.0 {
		t.Errorf("process exits %v: want one, status 5, lifetime 2000 from fork, ppid 100", proc)
	}
	if len(threads) != 0 {
		t.Errorf("thread exits filed under the pid: %v", threads)
	}
	var leader int
	for _, r := range recs {
		if r["kind"] == "leader-exit" {
			leader++
			if r["pid"] != 200.0 || r["thread"] != false || r["threads_left"] != 2.0 {
				t.Errorf("leader-exit record %v", r)
			}
		}
	}
	if leader != 1 {
		t.Errorf("%d leader-exit records, want 1", leader)
	}
	if h.mon.f.subtree[200] || h.mon.procs[200] != nil || len(h.mon.threads) != 0 {
		t.Error("the ended process is still in the table or the subtree")
	}
}

// TestThreadExecKeepsProcess: a thread's execve ends the main thread, and
// the exec carries on under the pid; the process ends at its real exit.
func TestThreadExecKeepsProcess(t *testing.T) {
	fp := newFakeProc(t)
	fp.add(200, map[string]string{"cmdline": "sh\x00-c\x00sleep 0.2; exit 5\x00", "comm": "sh\n"})
	for _, sub := range []map[int32]bool{nil, {100: true}} {
		h := newHarness(t, fp, filter{kinds: defaultKinds}, true)
		var roots []int32
		if sub != nil {
			roots = []int32{100}
		}
		h.mon.seed([]proc.Process{{PID: 100, PPID: 1, Comm: "prog"}}, roots)
		h.mon.handle(fork(1000, 100, 200))
		h.mon.handle(thread(1100, 200, 201))
		h.mon.handle(thread(1150, 200, 202))
		h.mon.handle(exitEv(1180, 202, 200, 0, 0)) // killed by the exec
		h.mon.handle(exitEv(1200, 200, 200, 100, 0))
		h.mon.handle(execEv(1300, 200)) // thread 201 took over pid 200
		h.mon.handle(exitEv(9000, 200, 200, 100, 5<<8))
		recs := jsonRecords(t, h.take())
		proc, _ := exits(recs, 200)
		if len(proc) != 1 || proc[0]["exit_code"] != 5.0 || proc[0]["lifetime_ns"] != 8000.0 || proc[0]["lifetime_from"] != "fork" {
			t.Errorf("subtree %v: process exits %v: want one, status 5, lifetime 8000 from the fork", sub, proc)
		}
		if len(h.mon.threads) != 0 {
			t.Errorf("threads left after the exec: %v", h.mon.threads)
		}
	}
}

// TestThreadIdentity: a thread's events carry the thread flag and the
// thread's own name, before and after it renames itself.
func TestThreadIdentity(t *testing.T) {
	fp := newFakeProc(t)
	h := newHarness(t, fp, filter{kinds: kAll}, true)
	h.mon.seed([]proc.Process{{PID: 100, PPID: 1, Comm: "server", RUID: 1000, EUID: 1000}}, nil)
	h.mon.handle(thread(1000, 100, 101))
	var name [16]byte
	copy(name[:], "worker-1")
	h.mon.handle(&proc.Event{Kind: proc.KindComm, Timestamp: 1100, PID: 101, TGID: 100, Comm: name})
	h.mon.handle(&proc.Event{Kind: proc.KindUID, Timestamp: 1150, PID: 101, TGID: 100, RUID: 0, EUID: 0})
	h.mon.handle(&proc.Event{Kind: proc.KindSID, Timestamp: 1160, PID: 101, TGID: 100})
	h.mon.handle(exitEv(1200, 101, 100, 0, 0))
	recs := jsonRecords(t, h.take())
	if len(recs) != 5 {
		t.Fatalf("%d records, want clone, comm, uid, sid, exit: %v", len(recs), recs)
	}
	for _, r := range recs {
		if r["thread"] != true || r["pid"] != 101.0 || r["tgid"] != 100.0 {
			t.Errorf("%v record of the thread: thread %v pid %v tgid %v", r["kind"], r["thread"], r["pid"], r["tgid"])
		}
	}
	if c := recs[1]; c["new_comm"] != "worker-1" || c["old_comm"] != "server" || c["comm"] != "worker-1" {
		t.Errorf("comm record %v", c)
	}
	if x := recs[4]; x["comm"] != "worker-1" || x["uid"] != 0.0 {
		t.Errorf("thread exit record %v: want the thread's own name and uid", x)
	}
	if p := h.mon.procs[100]; p.comm != "server" || p.ruid != 1000 {
		t.Errorf("the thread's rename or setuid changed the process: %+v", p)
	}
}

// TestStaleParentRefreshed: an orphan that execs after its parent ended
// shows its new parent, read from /proc.
func TestStaleParentRefreshed(t *testing.T) {
	fp := newFakeProc(t)
	fp.add(300, map[string]string{"cmdline": "sleep\x001\x00", "comm": "sleep\n", "status": "Name:\tsleep\nPPid:\t1\nUid:\t0\t0\t0\t0\n"})
	h := newHarness(t, fp, filter{kinds: kAll}, true)
	h.mon.seed([]proc.Process{{PID: 100, PPID: 1, Comm: "sh"}}, nil)
	h.mon.handle(fork(1000, 100, 200))
	h.mon.handle(fork(1100, 200, 300))
	h.mon.handle(exitEv(1200, 200, 200, 100, 0))
	h.mon.handle(fork(1300, 100, 200)) // a new process gets the pid
	h.mon.handle(execEv(1400, 300))
	recs := jsonRecords(t, h.take())
	var ex map[string]any
	for _, r := range recs {
		if r["kind"] == "exec" {
			ex = r
		}
	}
	if ex == nil || ex["ppid"] != 1.0 {
		t.Errorf("exec record %v: want ppid 1 (the parent 200 ended; pid 200 is another process now)", ex)
	}
}

// TestNameFallback: a zombie has no command line but has its name.
func TestNameFallback(t *testing.T) {
	fp := newFakeProc(t)
	fp.add(300, map[string]string{"cmdline": "", "comm": "true\n", "cgroup": "0::/\n"})
	fp.add(301, map[string]string{"status": "Name:\tfalse\nPPid:\t100\nUid:\t0\t0\t0\t0\n"})
	for _, jsonOut := range []bool{false, true} {
		h := newHarness(t, fp, filter{kinds: kExec}, jsonOut)
		h.mon.seed([]proc.Process{{PID: 100, PPID: 1, Comm: "sh"}}, nil)
		h.mon.handle(fork(1000, 100, 300))
		h.mon.handle(execEv(1100, 300))
		h.mon.handle(execEv(1200, 301)) // unknown: status is the last resort
		got := h.take()
		if jsonOut {
			if r := decode(t, got[0]); r["comm"] != "true" || r["gone"] != true {
				t.Errorf("zombie exec record %v: want comm true, gone", r)
			}
			if r := decode(t, got[1]); r["comm"] != "false" {
				t.Errorf("exec record %v: want comm false from status", r)
			}
		} else if !strings.HasSuffix(got[0], " [true] <exited before its command line could be read>\n") {
			t.Errorf("zombie exec line %q: want its name", got[0])
		}
	}
}

// TestTextEscapes: nothing from another process reaches the terminal raw.
func TestTextEscapes(t *testing.T) {
	evil := "\x1b[2J\x1b[31mX\nFAKE"
	fp := newFakeProc(t)
	fp.add(300, map[string]string{"cmdline": "prog\x00" + evil + "\x00\u202eabc\x00\xff\x00", "comm": evil + "\n",
		"cgroup": "0::/docker/\x1b]0;t\x07\n"})
	h := newHarness(t, fp, filter{kinds: kAll}, false)
	h.fmt.cgroups = true
	u := "\x1b[1mroot"
	h.fmt.users.names[0] = u
	h.mon.seed([]proc.Process{{PID: 100, PPID: 1, Comm: "sh"}}, nil)
	h.mon.handle(fork(1000, 100, 300))
	h.mon.handle(execEv(1100, 300))
	var c [16]byte
	copy(c[:], evil)
	h.mon.handle(&proc.Event{Kind: proc.KindComm, Timestamp: 1200, PID: 300, TGID: 300, Comm: c})
	h.mon.handle(exitEv(1300, 300, 300, 100, 0))
	got := h.take()
	if len(got) != 4 {
		t.Fatalf("%d lines: %q", len(got), got)
	}
	for _, l := range got {
		if strings.Count(l, "\n") != 1 || strings.ContainsAny(l, "\x1b\x07\u202e") || strings.Contains(l, "\xff") {
			t.Errorf("unescaped line %q", l)
		}
	}
	if !strings.Contains(got[2], strconv.Quote(evil)) {
		t.Errorf("comm line %q does not show the name quoted", got[2])
	}
}

// TestJSONLossless: bytes that are not UTF-8 come with their exact hex.
func TestJSONLossless(t *testing.T) {
	fp := newFakeProc(t)
	fp.add(300, map[string]string{"cmdline": "prog\x00a\xffb\x00", "comm": "n\xfe\n", "cgroup": "0::/\n"})
	h := newHarness(t, fp, filter{kinds: kExec}, true)
	h.mon.seed([]proc.Process{{PID: 100, PPID: 1, Comm: "sh"}}, nil)
	h.mon.handle(fork(1000, 100, 300))
	h.mon.handle(execEv(1100, 300))
	var r struct {
		Cmdline    []string `json:"cmdline"`
		CmdlineHex []string `json:"cmdline_hex"`
		Comm       string   `json:"comm"`
		CommHex    string   `json:"comm_hex"`
	}
	if err := json.Unmarshal([]byte(h.take()[0]), &r); err != nil {
		t.Fatal(err)
	}
	back := func(h string) string {
		b, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if len(r.CmdlineHex) != 2 || back(r.CmdlineHex[0]) != "prog" || back(r.CmdlineHex[1]) != "a\xffb" || r.Cmdline[1] != "a\ufffdb" {
		t.Errorf("cmdline %q hex %q", r.Cmdline, r.CmdlineHex)
	}
	if back(r.CommHex) != "n\xfe" {
		t.Errorf("comm %q hex %q", r.Comm, r.CommHex)
	}
}

// TestOverrunRecordTime: an overrun record has a timestamp on the events'
// clock, converted like any other.
func TestOverrunRecordTime(t *testing.T) {
	fp := newFakeProc(t)
	h := newHarness(t, fp, filter{kinds: kAll}, true)
	before := monoNow()
	h.mon.handle(&proc.Event{Kind: proc.KindLost, CPU: proc.CPUUnknown})
	r := decode(t, h.take()[0])
	ts := uint64(r["ts_ns"].(float64))
	if ts < before || ts > monoNow() {
		t.Errorf("overrun ts_ns %d not between %d and now", ts, before)
	}
	wall, err := time.Parse(time.RFC3339Nano, r["time"].(string))
	if err != nil || time.Since(wall).Abs() > 5*time.Second {
		t.Errorf("overrun time %v (%v)", r["time"], err)
	}
}

func TestTTYNames(t *testing.T) {
	for _, c := range []struct {
		nr   uint32
		want string
	}{
		{0, "?"}, {136<<8 | 3, "pts/3"}, {137<<8 | 4, "pts/260"}, {136<<8 | 1<<20, "pts/256"},
		{4<<8 | 1, "tty1"}, {4<<8 | 64, "ttyS0"}, {5<<8 | 1, "console"}, {7<<8 | 2, "7:2"},
	} {
		if got := ttyName(c.nr); got != c.want {
			t.Errorf("ttyName(%#x) = %q, want %q", c.nr, got, c.want)
		}
	}
	if n, ok := parseStatTTY([]byte("42 (a) b) c) S 1 42 42 34817 42 4194560 0")); !ok || n != 34817 {
		t.Errorf("parseStatTTY: %d %v", n, ok)
	}
	if _, ok := parseStatTTY([]byte("42 (x")); ok {
		t.Error("parseStatTTY accepted a cut line")
	}
}

func TestMinMatchLen(t *testing.T) {
	for pat, want := range map[string]int{"abc": 3, "a*": 1, "victoria-metrics*": 16, "[ab]c?": 3, `a\*`: 2, "*": 0} {
		if got := minMatchLen(pat); got != want {
			t.Errorf("minMatchLen(%q) = %d, want %d", pat, got, want)
		}
	}
}

func TestClosingLine(t *testing.T) {
	if l := closingLine(proc.Stats{Events: 10, Overruns: 1}, 0, nil, 0, 0); strings.Contains(l, " 0 lost") || !strings.Contains(l, "an unknown number of events lost") {
		t.Errorf("overrun with no count: %q", l)
	}
	if l := closingLine(proc.Stats{Events: 10, Overruns: 1, Lost: 2}, 7, nil, 0, 0); !strings.Contains(l, "at least 7 lost") {
		t.Errorf("drops above gaps: %q", l)
	}
	if l := closingLine(proc.Stats{Events: 10}, 0, nil, 3, 0); !strings.Contains(l, " 0 lost") || !strings.Contains(l, "3 events that came after the stop were not shown") {
		t.Errorf("clean: %q", l)
	}
	// Counts of one are singular.
	if l := closingLine(proc.Stats{Events: 1, Overruns: 1}, 0, nil, 1, 0); !strings.Contains(l, "procmon: 1 event received, ") ||
		!strings.Contains(l, "1 buffer overrun of unknown size") || !strings.Contains(l, "1 event that came after the stop was not shown") {
		t.Errorf("counts of one: %q", l)
	}
	// Events switched off machine-wide: a loss no count shows.
	if l := closingLine(proc.Stats{Events: 10}, 0, nil, 0, 2); strings.Contains(l, " 0 lost") || !strings.Contains(l, "an unknown number of events lost") ||
		!strings.Contains(l, "switched off for the whole machine 2 times") {
		t.Errorf("events switched off: %q", l)
	}
}

// TestSeededThreadsCountedOnce: a thread created between the subscription
// and the /proc listing is seen twice (listed, then its clone event); the
// process still ends with its last thread.
func TestSeededThreadsCountedOnce(t *testing.T) {
	fp := newFakeProc(t)
	fp.add(200, map[string]string{"cmdline": "prog\x00", "task/200/comm": "prog\n", "task/201/comm": "prog\n"})
	h := newHarness(t, fp, filter{kinds: kExit}, true)
	h.mon.seed([]proc.Process{{PID: 200, PPID: 1, Comm: "prog", Threads: 2}}, []int32{200})
	h.mon.handle(thread(1000, 200, 201))
	h.mon.handle(exitEv(2000, 200, 200, 1, 0))
	h.mon.handle(exitEv(2100, 201, 200, 0, 3<<8))
	got := h.take()
	if len(got) != 1 || decode(t, got[0])["exit_code"] != 3.0 || !h.mon.treeEnded {
		t.Errorf("records %q, tree ended %v: want the process's exit with status 3, ending -p", got, h.mon.treeEnded)
	}
}

// TestExecReadAhead: what /proc said when an exec rang the doorbell is what
// its record shows when the event comes out of the main socket later, even
// if the process has changed or gone by then; an exec whose event never
// comes is forgotten after the main socket's next reads; with -p, nothing is
// read ahead.
func TestExecReadAhead(t *testing.T) {
	fp := newFakeProc(t)
	fp.add(100, map[string]string{"cmdline": "bash\x00"})
	fp.add(200, map[string]string{"cmdline": "ls\x00-l\x00", "comm": "ls\n", "cgroup": "0::/system.slice/docker-0123456789abcdef0123456789abcdef.scope\n"})
	h := newHarness(t, fp, filter{kinds: kAll}, true)
	h.mon.seed([]proc.Process{{PID: 100, PPID: 1, Comm: "bash", RUID: 1000, EUID: 1000}}, nil)
	h.mon.handle(fork(1000, 100, 200))
	ex := execEv(2000, 200)
	if !h.mon.preExec(ex) {
		t.Fatal("preExec read nothing ahead without -p")
	}
	// The process exits before its exec comes out of the main socket.
	if err := os.RemoveAll(filepath.Join(fp.root, "200")); err != nil {
		t.Fatal(err)
	}
	h.mon.handle(ex)
	got := h.take()
	e := decode(t, got[len(got)-1])
	if e["kind"] != "exec" || e["comm"] != "ls" || e["gone"] != nil || e["container"] != "docker:0123456789ab" {
		t.Errorf("exec record %v: want what /proc had at the doorbell", e)
	}
	if args, _ := e["cmdline"].([]any); len(args) != 2 || args[0] != "ls" {
		t.Errorf("exec record cmdline %v", e["cmdline"])
	}
	if len(h.mon.pre) != 0 {
		t.Errorf("%d execs still kept after their events came", len(h.mon.pre))
	}

	// An exec the main socket lost: kept for two reads of it, then gone.
	fp.add(300, map[string]string{"cmdline": "true\x00"})
	h.mon.preExec(execEv(3000, 300))
	for i := 0; i < 2; i++ {
		h.mon.sweepPre()
		if len(h.mon.pre) != 1 {
			t.Fatalf("after %d reads of the main socket: %d execs kept, want 1", i+1, len(h.mon.pre))
		}
	}
	h.mon.sweepPre()
	if len(h.mon.pre) != 0 {
		t.Errorf("an exec whose event never came is still kept after three reads")
	}

	// With -p the subtree decides, from the events before the exec.
	hp := newHarness(t, fp, filter{kinds: kAll}, true)
	hp.mon.seed([]proc.Process{{PID: 100, PPID: 1, Comm: "bash"}}, []int32{100})
	if hp.mon.preExec(execEv(4000, 300)) {
		t.Error("preExec read ahead with -p")
	}
}
