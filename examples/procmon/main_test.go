//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/testutil"
	"github.com/cnlink/connector/proc"
)

const (
	program   = "procmon" // the testutil helper that runs as procmon
	helperEnv = "PROCMON_TEST_HELPER"
	timeout   = 30 * time.Second
)

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(helper(h))
	}
	testutil.Main(m, map[string]testutil.HelperFunc{program: mainExit, oldKernel: oldKernelMain})
}

// oldKernel is the testutil helper that runs procmon as on a kernel before
// 6.6 (see oldKernelMain).
const oldKernel = "procmon-before-6.6"

// oldKernelMain runs procmon with a doorbell that could not be opened,
// found out after the subscription's acknowledgement timeout, as kernels
// before 6.6 used to cost (before the doorbell's BPF filter): procmon then
// runs without it, whatever the host's kernel.
func oldKernelMain(args []string) int {
	bellOpener = func(o *options) *doorbell {
		if b := openBell(o); b != nil {
			b.Close()
		}
		time.Sleep(proc.DefaultAckTimeout)
		return nil
	}
	return mainExit(args)
}

// helper is what the test binary does when a test runs it as a child.
func helper(mode string) int {
	switch mode {
	case "exit7":
		return 7
	case "exit3":
		return 3
	case "stdin-exit7": // wait until the test closes stdin
		_, _ = io.Copy(io.Discard, os.Stdin)
		return 7
	case "sigkill":
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	case "grandchild": // run an exit3 helper as a child, then exit 0
		exe, _ := os.Executable()
		c := exec.Command(exe, "grandchild-arg")
		c.Env = append(os.Environ(), helperEnv+"=exit3")
		if err := c.Run(); err == nil {
			return 1 // the grandchild should have failed with 3
		}
		return 0
	case "setcomm": // rename the main thread, then exit 5
		if err := os.WriteFile("/proc/self/comm", []byte(os.Args[1]), 0); err != nil {
			return 1
		}
		return 5
	}
	return moreHelpers(mode)
}

// skipUnlessListen skips when this process may not subscribe to process
// events (before Linux 6.6 that needs CAP_NET_ADMIN) or the kernel lacks
// them.
func skipUnlessListen(t *testing.T) {
	t.Helper()
	l, err := proc.Listen(nil)
	switch {
	case err == nil:
		l.Close()
	case errors.Is(err, os.ErrPermission):
		t.Skipf("subscribing to process events needs CAP_NET_ADMIN on this kernel: %v", err)
	case errors.Is(err, proc.ErrNoProcEvents):
		t.Skipf("kernel without CONFIG_PROC_EVENTS: %v", err)
	case errors.Is(err, connector.ErrNotInitialNetNS), errors.Is(err, proc.ErrNamespace):
		t.Skipf("not in the initial namespaces, where process events exist: %v", err)
	default:
		t.Fatalf("listen: %v", err)
	}
}

// startMonitor runs procmon and waits until it listens. The tests give it
// a large receive buffer: other process-event storms on the machine must
// not make it lose the test's own events.
func startMonitor(t *testing.T, args ...string) *testutil.Proc {
	t.Helper()
	p := testutil.StartHelper(t, program, append([]string{"-rcvbuf", "67108864"}, args...)...)
	p.Stderr.FindPrefix(t, timeout, "procmon: listening")
	return p
}

// helperCmd returns a command running the test binary in a helper mode.
func helperCmd(t *testing.T, mode string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := exec.Command(exe, args...)
	c.Env = append(os.Environ(), helperEnv+"="+mode)
	return c
}

func runHelper(t *testing.T, mode string, wantCode int, args ...string) int {
	t.Helper()
	c := helperCmd(t, mode, args...)
	err := c.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("helper %s: %v", mode, err)
	}
	if code != wantCode {
		t.Fatalf("helper %s exited with %d, want %d", mode, code, wantCode)
	}
	return c.Process.Pid
}

// jsonEvent is procmon's documented JSON record.
type jsonEvent struct {
	Time         string   `json:"time"`
	TsNs         uint64   `json:"ts_ns"`
	CPU          int      `json:"cpu"`
	Kind         string   `json:"kind"`
	PID          int      `json:"pid"`
	TGID         int      `json:"tgid"`
	PPID         int      `json:"ppid"`
	Thread       bool     `json:"thread"`
	UID          *int     `json:"uid"`
	EUID         *int     `json:"euid"`
	User         string   `json:"user"`
	Comm         string   `json:"comm"`
	Cmdline      []string `json:"cmdline"`
	CmdlineTrunc bool     `json:"cmdline_truncated"`
	Gone         bool     `json:"gone"`
	Cgroup       string   `json:"cgroup"`
	Container    string   `json:"container"`
	WaitStatus   *int     `json:"wait_status"`
	ExitCode     *int     `json:"exit_code"`
	Signal       string   `json:"signal"`
	CoreDumped   bool     `json:"core_dumped"`
	LifetimeNs   *int64   `json:"lifetime_ns"`
	LifetimeFrom string   `json:"lifetime_from"`
	NewComm      string   `json:"new_comm"`
	OldComm      string   `json:"old_comm"`
	RGID         *int     `json:"rgid"`
	EGID         *int     `json:"egid"`
	TracerPID    *int     `json:"tracer_pid"`
	TracerTGID   *int     `json:"tracer_tgid"`
	Lost         *int     `json:"lost"`
	Loss         string   `json:"loss"`
	What         *int     `json:"what"`
	Raw          string   `json:"raw"`
	CommHex      string   `json:"comm_hex"`
	CmdlineHex   []string `json:"cmdline_hex"`
	CgroupHex    string   `json:"cgroup_hex"`
	UserHex      string   `json:"user_hex"`
	NewCommHex   string   `json:"new_comm_hex"`
	OldCommHex   string   `json:"old_comm_hex"`
	TTY          string   `json:"tty"`
	ThreadsLeft  *int     `json:"threads_left"`
}

// String shows the record as JSON, so that %v and %+v print the values of
// its pointer fields rather than their addresses.
func (e jsonEvent) String() string {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Sprintf("jsonEvent(%v)", err)
	}
	return string(b)
}

func decodeJSON(t *testing.T, line string) jsonEvent {
	t.Helper()
	var e jsonEvent
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("line is not a documented procmon JSON record: %v\n%s", err, line)
	}
	return e
}

func isLoss(line string) bool {
	return strings.Contains(line, `"kind":"lost"`) || strings.Contains(line, " LOST ")
}

// errRetry means an awaited line did not come while procmon reported lost
// events: the kernel may have dropped it, so the scenario is tried again.
var errRetry = errors.New("events were lost")

// await waits for a line after the first mark lines that match accepts. It
// returns errRetry when procmon reported lost events and the line still did
// not come, and fails the test when the line did not come without loss.
func await(t *testing.T, p *testutil.Proc, mark int, what string, match func(string) bool) (string, error) {
	t.Helper()
	line, err := p.Stdout.WaitFrom(mark, timeout, func(s string) bool { return match(s) || isLoss(s) })
	if err != nil {
		t.Fatalf("waiting for %s: %v; stdout:\n%s", what, err, p.Stdout)
	}
	if match(line) {
		return line, nil
	}
	// Loss reported: the line may still be on its way.
	if line, err := p.Stdout.WaitFrom(mark, 3*time.Second, match); err == nil {
		return line, nil
	}
	t.Logf("%s did not come, and procmon reported lost events (the machine is busy): trying again", what)
	return "", errRetry
}

func awaitJSON(t *testing.T, p *testutil.Proc, mark int, what string, match func(jsonEvent) bool) (jsonEvent, error) {
	t.Helper()
	line, err := await(t, p, mark, what, func(s string) bool {
		var e jsonEvent
		return json.Unmarshal([]byte(s), &e) == nil && e.Kind != "lost" && match(e)
	})
	if err != nil {
		return jsonEvent{}, err
	}
	return decodeJSON(t, line), nil
}

// retry runs a scenario until it completes without losing its events.
func retry(t *testing.T, scenario func() error) {
	t.Helper()
	for attempt := 1; attempt <= 5; attempt++ {
		if err := scenario(); err == nil {
			return
		}
	}
	t.Fatal("every attempt lost its events: the machine is too busy for this test")
}

// TestJSONSeesChildExit7 is the acceptance test: procmon --json
// reports a child that the test spawns, with its exact pid, command line
// and parent, and its exit status 7 with its lifetime.
func TestJSONSeesChildExit7(t *testing.T) {
	skipUnlessListen(t)
	mon := startMonitor(t, "--json")
	exe, _ := os.Executable()
	wantComm := filepath.Base(exe)
	if len(wantComm) > 15 {
		wantComm = wantComm[:15]
	}
	retry(t, func() error {
		mark := mon.Stdout.Len()
		marker := "marker-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		child := helperCmd(t, "stdin-exit7", marker, "second arg")
		stdin, err := child.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		started := time.Now()
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		pid := child.Process.Pid
		defer func() {
			stdin.Close()
			_ = child.Wait()
		}()

		fork, err := awaitJSON(t, mon, mark, fmt.Sprintf("the fork of pid %d", pid), func(e jsonEvent) bool { return e.Kind == "fork" && e.PID == pid })
		if err != nil {
			return err
		}
		if fork.TGID != pid || fork.PPID != os.Getpid() || fork.Thread {
			t.Errorf("fork record %+v: want tgid %d, ppid %d (this test), not a thread", fork, pid, os.Getpid())
		}
		er, err := awaitJSON(t, mon, mark, fmt.Sprintf("the exec of pid %d", pid), func(e jsonEvent) bool { return e.Kind == "exec" && e.PID == pid })
		if err != nil {
			return err
		}
		wantArgs := []string{exe, marker, "second arg"}
		if strings.Join(er.Cmdline, "\x00") != strings.Join(wantArgs, "\x00") || er.Gone {
			t.Errorf("exec record cmdline %q (gone %v), want %q: the child is alive until stdin closes", er.Cmdline, er.Gone, wantArgs)
		}
		if er.Comm != wantComm || er.PPID != os.Getpid() || er.TGID != pid {
			t.Errorf("exec record comm %q ppid %d tgid %d, want %q %d %d", er.Comm, er.PPID, er.TGID, wantComm, os.Getpid(), pid)
		}
		if er.UID == nil || *er.UID != os.Getuid() || er.EUID == nil || *er.EUID != os.Geteuid() {
			t.Errorf("exec record uid %v euid %v, want %d %d", er.UID, er.EUID, os.Getuid(), os.Geteuid())
		}
		if _, err := os.Stat("/proc/self/cgroup"); err == nil && er.Cgroup == "" {
			t.Errorf("exec record lacks the cgroup: %+v", er)
		}
		if !strings.HasPrefix(er.Time, time.Now().Format("2006-")) || er.TsNs == 0 {
			t.Errorf("exec record lacks the time: %+v", er)
		}

		stdin.Close()
		err = child.Wait()
		if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 7 {
			t.Fatalf("child: %v, want exit status 7", err)
		}
		exit, err := awaitJSON(t, mon, mark, fmt.Sprintf("the exit of pid %d", pid), func(e jsonEvent) bool { return e.Kind == "exit" && e.PID == pid })
		if err != nil {
			return err
		}
		// The exit is stamped after the parent was woken, possibly
		// later than Wait's return: the bound is when the record came.
		lived := time.Since(started)
		if exit.ExitCode == nil || *exit.ExitCode != 7 || exit.WaitStatus == nil || *exit.WaitStatus != 7<<8 || exit.Signal != "" || exit.CoreDumped {
			t.Errorf("exit record %+v: want exit_code 7, wait_status 1792, no signal", exit)
		}
		if exit.Thread || exit.TGID != pid || exit.PPID != os.Getpid() {
			t.Errorf("exit record thread %v tgid %d ppid %d, want a process %d of parent %d", exit.Thread, exit.TGID, exit.PPID, pid, os.Getpid())
		}
		if exit.LifetimeNs == nil || exit.LifetimeFrom != "fork" || *exit.LifetimeNs <= 0 || time.Duration(*exit.LifetimeNs) > lived {
			var life any = exit.LifetimeNs
			if exit.LifetimeNs != nil {
				life = time.Duration(*exit.LifetimeNs)
			}
			t.Errorf("exit record lifetime %v from %q: want from fork, positive and at most %v", life, exit.LifetimeFrom, lived)
		}
		if strings.Join(exit.Cmdline, "\x00") != strings.Join(wantArgs, "\x00") {
			t.Errorf("exit record cmdline %q, want the one read at exec %q", exit.Cmdline, wantArgs)
		}
		return nil
	})

	mon.Signal(t, syscall.SIGINT)
	if code := mon.Wait(t, timeout); code != 0 {
		t.Fatalf("procmon exited with %d after SIGINT; stderr:\n%s", code, mon.Stderr)
	}
	mon.Stderr.Find(t, time.Second, "the closing line", func(s string) bool {
		return strings.HasPrefix(s, "procmon: ") && strings.Contains(s, " received, ")
	})
	for _, l := range mon.Stdout.All() {
		decodeJSON(t, l) // every line is a documented record
	}
}

// TestSubtreeTextSignals follows this test's own process subtree in text
// mode: a child killed by SIGKILL, and a child with a grandchild that exits
// with 3. Nothing outside the subtree may show up.
func TestSubtreeTextSignals(t *testing.T) {
	skipUnlessListen(t)
	mon := startMonitor(t, "-p", strconv.Itoa(os.Getpid()))
	me := strconv.Itoa(os.Getpid())
	ours := map[string]bool{}
	field := func(s string, i int) string {
		if f := strings.Fields(s); len(f) > i {
			return f[i]
		}
		return ""
	}
	retry(t, func() error {
		mark := mon.Stdout.Len()
		killed := strconv.Itoa(runHelper(t, "sigkill", -1))
		parent := strconv.Itoa(runHelper(t, "grandchild", 0))
		ours[killed], ours[parent] = true, true

		line, err := await(t, mon, mark, "the SIGKILL exit", func(s string) bool { return field(s, 1) == "exit" && field(s, 2) == killed })
		if err != nil {
			return err
		}
		if field(line, 3) != me || field(line, 5) != "SIGKILL" {
			t.Errorf("exit line %q: want ppid %s and SIGKILL", line, me)
		}
		// The grandchild's exec names the child as its parent and shows
		// its argument, unless it exited before procmon could read it
		// (it exits at once), which procmon must then say.
		line, err = await(t, mon, mark, "the grandchild's exec", func(s string) bool {
			return field(s, 1) == "exec" && field(s, 3) == parent
		})
		if err != nil {
			return err
		}
		if !strings.HasSuffix(line, " grandchild-arg") && !strings.HasSuffix(line, "<exited before its command line could be read>") {
			t.Errorf("grandchild's exec line %q: want its argument, or that it was gone", line)
		}
		gpid := field(line, 2)
		ours[gpid] = true
		if _, err := await(t, mon, mark, "the grandchild's exit 3", func(s string) bool {
			return field(s, 1) == "exit" && field(s, 2) == gpid && field(s, 5) == "exit" && field(s, 6) == "3"
		}); err != nil {
			return err
		}
		_, err = await(t, mon, mark, "the child's exit 0", func(s string) bool {
			return field(s, 1) == "exit" && field(s, 2) == parent && field(s, 5) == "exit" && field(s, 6) == "0"
		})
		return err
	})
	mon.Signal(t, syscall.SIGTERM)
	if code := mon.Wait(t, timeout); code != 0 {
		t.Fatalf("procmon exited with %d; stderr:\n%s", code, mon.Stderr)
	}
	out := mon.Stdout.All()
	if len(out) == 0 || !strings.HasPrefix(out[0], "TIME ") {
		t.Fatalf("no header line:\n%s", mon.Stdout)
	}
	// Besides the helpers, the Go runtime may fork a probe child (it
	// checks for clone pidfd support), which is in the subtree too.
	for _, l := range out[1:] {
		if isLoss(l) {
			continue
		}
		if !(ours[field(l, 2)] || ours[field(l, 3)] || field(l, 3) == me) {
			t.Errorf("line about a process outside the subtree: %q", l)
		}
	}
}

// TestCommFilter renames a child through /proc/self/comm and follows only
// that name.
func TestCommFilter(t *testing.T) {
	skipUnlessListen(t)
	name := "cnm" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	mon := startMonitor(t, "--json", "-e", "comm,exit,exec", "-comm", name+"*")
	retry(t, func() error {
		mark := mon.Stdout.Len()
		pid := runHelper(t, "setcomm", 5, name+"-x")
		comm, err := awaitJSON(t, mon, mark, "the comm event", func(e jsonEvent) bool { return e.Kind == "comm" && e.PID == pid })
		if err != nil {
			return err
		}
		if comm.NewComm != name+"-x" || comm.Comm != name+"-x" {
			t.Errorf("comm record %+v: want new_comm and comm %q", comm, name+"-x")
		}
		// The old name is known when procmon read it at the exec (the
		// helper may have exited before that).
		exe, _ := os.Executable()
		// (Under load procmon may read the name only after the rename:
		// then the old name it knows is the new one.)
		if old := comm.OldComm; old != "" && old != name+"-x" && !strings.HasPrefix(filepath.Base(exe), old) {
			t.Errorf("comm record old_comm %q, want the helper's name before the rename", old)
		}
		exit, err := awaitJSON(t, mon, mark, "the exit", func(e jsonEvent) bool { return e.Kind == "exit" && e.PID == pid })
		if err != nil {
			return err
		}
		if exit.ExitCode == nil || *exit.ExitCode != 5 {
			t.Errorf("exit record %+v: want exit_code 5", exit)
		}
		return nil
	})
	mon.Signal(t, syscall.SIGINT)
	mon.Wait(t, timeout)
	for _, l := range mon.Stdout.All() {
		e := decodeJSON(t, l)
		if e.Kind == "lost" {
			continue
		}
		if !strings.HasPrefix(e.Comm, name) {
			t.Errorf("record of another process passed the comm filter: %s", l)
		}
		if e.Kind == "exec" && e.Comm != name+"-x" {
			// (An exec whose name procmon read after the rename
			// matches by what procmon could know.)
			t.Errorf("the exec (before the rename) passed the comm filter: %s", l)
		}
	}
}

func TestStatsJSON(t *testing.T) {
	skipUnlessListen(t)
	var s struct {
		Kind       string            `json:"kind"`
		DurationNs int64             `json:"duration_ns"`
		Counts     map[string]uint64 `json:"counts"`
		Unknown    uint64            `json:"unknown"`
		Lost       uint64            `json:"lost"`
		Overruns   uint64            `json:"overruns"`
		Drops      uint64            `json:"drops"`
		TopForkers []struct {
			PID   int    `json:"pid"`
			Comm  string `json:"comm"`
			Forks uint64 `json:"forks"`
		} `json:"top_forkers"`
		TopExecs []struct {
			Program string `json:"program"`
			Execs   uint64 `json:"execs"`
		} `json:"top_execs"`
	}
	retry(t, func() error {
		mon := startMonitor(t, "--json", "-stats", "-p", strconv.Itoa(os.Getpid()))
		pids := []int{runHelper(t, "exit7", 7), runHelper(t, "exit7", 7)}
		for _, pid := range pids {
			if _, err := awaitJSON(t, mon, 0, "a helper's exit", func(e jsonEvent) bool { return e.Kind == "exit" && e.PID == pid }); err != nil {
				mon.Signal(t, syscall.SIGTERM)
				mon.Wait(t, timeout)
				return err
			}
		}
		mon.Signal(t, syscall.SIGTERM)
		if code := mon.Wait(t, timeout); code != 0 {
			t.Fatalf("procmon exited with %d; stderr:\n%s", code, mon.Stderr)
		}
		out := mon.Stdout.All()
		s.Counts = nil
		dec := json.NewDecoder(strings.NewReader(out[len(out)-1]))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil || s.Kind != "summary" {
			t.Fatalf("last line is not the summary (%v): %s", err, out[len(out)-1])
		}
		if s.Lost > 0 || s.Overruns > 0 {
			t.Logf("events were lost (%d, %d overruns): trying again", s.Lost, s.Overruns)
			return errRetry
		}
		return nil
	})
	if s.Counts["fork"] != 2 || s.Counts["exec"] != 2 || s.Counts["exit"] != 2 || s.DurationNs <= 0 {
		t.Errorf("summary counts %v over %dns: want 2 forks, execs and exits", s.Counts, s.DurationNs)
	}
	exe, _ := os.Executable()
	if len(s.TopForkers) == 0 || s.TopForkers[0].PID != os.Getpid() || s.TopForkers[0].Forks != 2 {
		t.Errorf("top forkers %+v: want this test (%d) with 2 forks first", s.TopForkers, os.Getpid())
	}
	// A helper that exits at once may be gone before procmon reads its
	// command line; it is then counted as "<gone>".
	var execs uint64
	for _, e := range s.TopExecs {
		if e.Program != exe && e.Program != "<gone>" {
			t.Errorf("top execs %+v: %q is not the helper", s.TopExecs, e.Program)
		}
		execs += e.Execs
	}
	if execs != 2 {
		t.Errorf("top execs %+v: want 2 execs of %s", s.TopExecs, exe)
	}
}

func TestDurationFlag(t *testing.T) {
	skipUnlessListen(t)
	start := time.Now()
	code, _, stderr := testutil.RunHelperExit(t, timeout, program, "-d", "300ms", "-e", "sid")
	if code != 0 {
		t.Fatalf("procmon -d 300ms exited with %d: %s", code, stderr)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("procmon -d 300ms stopped after %v", d)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-e", "frob"},
		{"-p", "x"},
		{"-p", "0"},
		{"-comm", "[x"},
		{"-d", "-1s"},
		{"extra"},
		{"-nope"},
		{"-rcvbuf", "99999999999"},
		{"-rcvbuf", "-1"},
		{"-passwd", "/nonexistent"},
	} {
		err := run(context.Background(), args, io.Discard, io.Discard)
		if !errors.As(err, new(usageError)) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
	for _, c := range []struct {
		args []string
		want []string // in the message
	}{
		{[]string{"-e", "frob"}, []string{`unknown event kind "frob"`}},
		{[]string{"-rcvbuf", "99999999999"}, []string{"-rcvbuf", "0", "2147483647"}},
		{[]string{"-passwd", "/nonexistent"}, []string{"-passwd", "/nonexistent", "no such file"}},
		{[]string{"-d", "-1s"}, []string{"-d -1s is negative"}},
		{[]string{"-coalesce", "-1ms"}, []string{"-coalesce -1ms is negative"}},
	} {
		code, _, stderr := testutil.RunHelperExit(t, timeout, program, c.args...)
		if code != 2 {
			t.Errorf("procmon %q: exit %d, want 2 (bad usage); stderr %q", c.args, code, stderr)
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("procmon %q: stderr %q does not say %q", c.args, stderr, w)
			}
		}
	}
}

// TestPasswdMissing: a user file that cannot be read leaves users to be
// shown by uid, and says why; one that appears later is read on a miss.
func TestPasswdMissing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "passwd")
	u, err := newUsers(p)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("newUsers(missing file) error %v, want one matching os.ErrNotExist", err)
	}
	if n := u.name(0); n != "" {
		t.Errorf("name(0) = %q without a user file", n)
	}
	if err := os.WriteFile(p, []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	u.checked = time.Time{} // as if the last look was long ago
	if n := u.name(0); n != "root" {
		t.Errorf("name(0) = %q once the file exists, want root", n)
	}
	if _, err := newUsers(t.TempDir()); err == nil {
		t.Error("newUsers(a directory): no error")
	}
}
