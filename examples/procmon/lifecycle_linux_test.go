//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/cnlink/connector/internal/testutil"
	"github.com/cnlink/connector/proc"
	"golang.org/x/sys/unix"
)

// The workloads below write down their own ground truth (the tid of the
// thread they made, the name they set, their parent after reparenting), and
// the tests compare procmon's records with it and with waitpid's status.

// evilName is a process name that would clear a terminal and forge a line
// if printed raw: 15 bytes, the kernel's limit.
const evilName = "\x1b[2J\x1b[31mX\nFAKE"

func moreHelpers(mode string) int {
	switch mode {
	case "thread-rename": // a thread renames itself (when stdin says so) and ends; then exit 0
		var tid int
		ok := onOtherThread(func() {
			tid = unix.Gettid()
			old, _ := os.ReadFile("/proc/thread-self/comm")
			fmt.Printf("tid=%d old=%s\n", tid, strings.TrimSuffix(string(old), "\n"))
			if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
				tid = -1
				return
			}
			if unix.Prctl(unix.PR_SET_NAME, uintptr(unsafePtr(os.Args[1]+"\x00")), 0, 0, 0) != nil {
				tid = -1
			}
		})
		if !ok || tid < 0 {
			return 1
		}
		for i := 0; i < 10000; i++ { // until the thread has ended
			if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid)); err != nil {
				return 0
			}
			time.Sleep(time.Millisecond)
		}
		return 1
	case "thread-exec": // a thread other than the main one calls execve
		exe, _ := os.Executable()
		var err error
		onOtherThread(func() {
			err = syscall.Exec(exe, []string{exe, "after-thread-exec"}, helperEnviron("sleep-exit5"))
		})
		fmt.Fprintln(os.Stderr, err)
		return 1
	case "sleep-exit5":
		time.Sleep(200 * time.Millisecond)
		return 5
	case "orphan": // start a child that outlives this process
		exe, _ := os.Executable()
		c := exec.Command(exe)
		c.Env = append(helperEnviron("orphan-child"), "PROCMON_TEST_PARENT="+strconv.Itoa(os.Getpid()))
		c.Stdout = os.Stdout
		if err := c.Start(); err != nil {
			return 1
		}
		fmt.Printf("child=%d\n", c.Process.Pid)
		return 0
	case "orphan-child": // once reparented, say to whom, then exec
		first, _ := strconv.Atoi(os.Getenv("PROCMON_TEST_PARENT"))
		for i := 0; os.Getppid() == first; i++ {
			if i > 10000 {
				return 1
			}
			time.Sleep(time.Millisecond)
		}
		fmt.Printf("ppid=%d\n", os.Getppid())
		exe, _ := os.Executable()
		_ = syscall.Exec(exe, []string{exe, "orphan-exec"}, helperEnviron("sleep-exit5"))
		return 1
	case "prctl-name": // set the name with prctl, then exit 5
		if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafePtr(os.Args[1]+"\x00")), 0, 0, 0); err != nil {
			return 1
		}
		return 5
	case "flood":
		return floodHelper()
	case "abort-nocore": // die of SIGABRT under ulimit -c 0
		if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
			return 1
		}
		debug.SetTraceback("crash")
		os.Stderr = nil
		panic("abort as planned")
	}
	return 99
}

// onOtherThread runs f in a goroutine locked to a thread other than the
// main thread; the thread ends when f returns (the goroutine exits locked).
// A goroutine that lands on the main thread stays there, parked, so that
// the next one cannot.
func onOtherThread(f func()) bool {
	for range 100 {
		done := make(chan bool)
		go func() {
			runtime.LockOSThread()
			if unix.Gettid() == os.Getpid() {
				done <- false
				select {}
			}
			f()
			done <- true
		}()
		if <-done {
			return true
		}
	}
	return false
}

// helperEnviron is this process's environment with the helper mode set to
// mode. (syscall.Exec passes the environment as it is, and a Go program
// takes the first of two values.)
func helperEnviron(mode string) []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, helperEnv+"=") && !strings.HasPrefix(e, "PROCMON_TEST_PARENT=") {
			env = append(env, e)
		}
	}
	return append(env, helperEnv+"="+mode)
}

// awaitLiveExec starts c, a helper in the stdin-exit7 mode (it lives until
// its stdin is closed), waits for procmon's JSON record of its exec after
// the first mark lines (see awaitJSON), and then lets it exit: the record,
// and the status waitpid gave.
func awaitLiveExec(t *testing.T, mon *testutil.Proc, mark int, c *exec.Cmd) (jsonEvent, syscall.WaitStatus, error) {
	t.Helper()
	stdin, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	pid := c.Process.Pid
	ex, err := awaitJSON(t, mon, mark, "the exec", func(e jsonEvent) bool { return e.Kind == "exec" && e.PID == pid })
	stdin.Close()
	return ex, waitStatus(t, c), err
}

// waitStatus waits for c and returns its wait status.
func waitStatus(t *testing.T, c *exec.Cmd) syscall.WaitStatus {
	t.Helper()
	_ = c.Wait()
	ws, ok := c.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		t.Fatalf("no wait status for %v", c.Args)
	}
	return ws
}

// TestKernelThreadIdentity: a thread that renames itself and ends is
// reported as a thread, with its old and new names, and its exit with its
// own name; the process's exit is separate.
func TestKernelThreadIdentity(t *testing.T) {
	skipUnlessListen(t)
	mon := startMonitor(t, "--json", "-e", "all", "-p", strconv.Itoa(os.Getpid()))
	retry(t, func() error {
		mark := mon.Stdout.Len()
		name := "th" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
		c := helperCmd(t, "thread-rename", name)
		out, err := c.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		in, err := c.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		var tid int
		var old string
		line, _ := bufio.NewReader(out).ReadString('\n')
		if _, err := fmt.Sscanf(line, "tid=%d old=%s", &tid, &old); err != nil {
			t.Fatalf("helper said %q: %v", line, err)
		}
		// The thread renames itself once procmon has shown its creation
		// (and so read its name): otherwise whether procmon saw the old
		// name would be a race between the two.
		if _, err := awaitJSON(t, mon, mark, "the thread's clone record", func(e jsonEvent) bool { return e.Kind == "clone" && e.PID == tid }); err != nil {
			in.Close()
			_ = c.Wait()
			return err
		}
		_, _ = in.Write([]byte("rename\n"))
		in.Close()
		ws := waitStatus(t, c)
		pid := c.Process.Pid
		comm, err := awaitJSON(t, mon, mark, "the thread's comm record", func(e jsonEvent) bool { return e.Kind == "comm" && e.PID == tid })
		if err != nil {
			return err
		}
		if !comm.Thread || comm.TGID != pid || comm.NewComm != name || comm.OldComm != old || comm.Comm != name {
			t.Errorf("comm record %+v: want thread %d of %d renamed from %q to %q", comm, tid, pid, old, name)
		}
		tx, err := awaitJSON(t, mon, mark, "the thread's exit", func(e jsonEvent) bool { return e.Kind == "exit" && e.PID == tid })
		if err != nil {
			return err
		}
		if !tx.Thread || tx.TGID != pid || tx.Comm != name {
			t.Errorf("thread exit %+v: want thread %d of %d named %q", tx, tid, pid, name)
		}
		px, err := awaitJSON(t, mon, mark, "the process's exit", func(e jsonEvent) bool { return e.Kind == "exit" && e.PID == pid })
		if err != nil {
			return err
		}
		if px.Thread || px.ExitCode == nil || *px.ExitCode != ws.ExitStatus() || px.Comm == name {
			t.Errorf("process exit %+v: want a process exit with status %d and the process's name", px, ws.ExitStatus())
		}
		return nil
	})
}

// TestKernelThreadExec: a non-main thread's execve does not end the
// process; its one exit record comes at the real end, with waitpid's
// status and the lifetime from the fork, with and without -p.
func TestKernelThreadExec(t *testing.T) {
	skipUnlessListen(t)
	all := startMonitor(t, "--json")
	sub := startMonitor(t, "--json", "-p", strconv.Itoa(os.Getpid()))
	retry(t, func() error {
		marks := []int{all.Stdout.Len(), sub.Stdout.Len()}
		c := helperCmd(t, "thread-exec")
		started := time.Now()
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		ws := waitStatus(t, c)
		pid := c.Process.Pid
		if !ws.Exited() || ws.ExitStatus() != 5 {
			t.Fatalf("workload: status %v, want exit 5", ws)
		}
		for i, mon := range []*testutil.Proc{all, sub} {
			x, err := awaitJSON(t, mon, marks[i], "the exit", func(e jsonEvent) bool { return e.Kind == "exit" && e.PID == pid && !e.Thread })
			if err != nil {
				return err
			}
			// The last exit is stamped after the parent was woken,
			// possibly after Wait returned: the bound is when the
			// record came.
			lived := time.Since(started)
			if x.ExitCode == nil || *x.ExitCode != ws.ExitStatus() || x.LifetimeFrom != "fork" || x.LifetimeNs == nil ||
				time.Duration(*x.LifetimeNs) < 200*time.Millisecond || time.Duration(*x.LifetimeNs) > lived {
				var code, life any = x.ExitCode, x.LifetimeNs
				if x.ExitCode != nil {
					code = *x.ExitCode
				}
				if x.LifetimeNs != nil {
					life = time.Duration(*x.LifetimeNs)
				}
				t.Errorf("monitor %d: exit status %v lifetime %v from %q: want status %d, lifetime from the fork between 200ms and %v", i, code, life, x.LifetimeFrom, ws.ExitStatus(), lived)
				for _, l := range mon.Stdout.Since(marks[i]) {
					if e := decodeJSON(t, l); e.TGID == pid {
						t.Log(l)
					}
				}
			}
			n := 0
			for _, l := range mon.Stdout.Since(marks[i]) {
				if e := decodeJSON(t, l); e.Kind == "exit" && e.PID == pid && !e.Thread {
					n++
				}
			}
			if n != 1 {
				t.Errorf("monitor %d: %d process exits for pid %d, want 1", i, n, pid)
			}
		}
		return nil
	})
}

// TestKernelBefore66ExecRead: when the doorbell cannot be opened and finding
// that out takes a second (forced here, see oldKernelMain; kernels before
// 6.6 did so before the doorbell's BPF filter), procmon reads an exec's /proc at once from the moment it says it
// listens: a process that execs then and lives 200 ms shows its command
// line. (procmon used to open the doorbell after subscribing its main
// socket, and so read the events queued meanwhile a second late, after the
// process had ended: "gone" on Linux 6.1.)
func TestKernelBefore66ExecRead(t *testing.T) {
	skipUnlessListen(t)
	mon := testutil.StartHelper(t, oldKernel, "-rcvbuf", "67108864", "--json", "-p", strconv.Itoa(os.Getpid()))
	mon.Stderr.FindPrefix(t, timeout, "procmon: listening")
	c := helperCmd(t, "sleep-exit5")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if ws := waitStatus(t, c); !ws.Exited() || ws.ExitStatus() != 5 {
		t.Fatalf("workload: status %v, want exit 5", ws)
	}
	pid := c.Process.Pid
	ex, err := awaitJSON(t, mon, 0, "the exec", func(e jsonEvent) bool { return e.Kind == "exec" && e.PID == pid })
	if err != nil {
		t.Fatalf("the exec of %d: %v", pid, err)
	}
	if ex.Gone || len(ex.Cmdline) != 1 || ex.Cmdline[0] != c.Path {
		t.Errorf("exec record of %d: gone %v, cmdline %q; want the command line %q, read while the process lived (200 ms)", pid, ex.Gone, ex.Cmdline, []string{c.Path})
	}
}

// TestKernelOrphanExecParent: a process that execs after its parent ended
// shows the parent it was reparented to.
func TestKernelOrphanExecParent(t *testing.T) {
	skipUnlessListen(t)
	mon := startMonitor(t, "--json", "-p", strconv.Itoa(os.Getpid()))
	retry(t, func() error {
		mark := mon.Stdout.Len()
		c := helperCmd(t, "orphan")
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		c.Stdout = w
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		w.Close()
		defer r.Close()
		_ = c.Wait() // reaped: now its child is reparented
		var child, ppid int
		sc := bufio.NewScanner(r)
		for sc.Scan() && (child == 0 || ppid == 0) {
			fmt.Sscanf(sc.Text(), "child=%d", &child)
			fmt.Sscanf(sc.Text(), "ppid=%d", &ppid)
		}
		if child == 0 || ppid == 0 {
			t.Fatalf("the orphan did not report (child %d, new parent %d)", child, ppid)
		}
		// Its second exec, after the reparenting. (Its first, by the
		// orphan's exec.Command, names the orphan rightly.)
		ex, err := awaitJSON(t, mon, mark, "the orphan's exec", func(e jsonEvent) bool {
			return e.Kind == "exec" && e.PID == child && len(e.Cmdline) == 2 && e.Cmdline[1] == "orphan-exec"
		})
		if err != nil {
			return err
		}
		if ex.PPID != ppid {
			t.Errorf("exec record ppid %d, want %d: the parent it was reparented to (the old one, %d, had exited)", ex.PPID, ppid, c.Process.Pid)
			for _, l := range mon.Stdout.Since(mark) {
				if e := decodeJSON(t, l); e.TGID == c.Process.Pid || e.TGID == child {
					t.Log(l)
				}
			}
		}
		x, err := awaitJSON(t, mon, mark, "the orphan's exit", func(e jsonEvent) bool { return e.Kind == "exit" && e.PID == child })
		if err != nil {
			return err
		}
		if x.ExitCode == nil || *x.ExitCode != 5 {
			t.Errorf("exit record %+v: want status 5", x)
		}
		return nil
	})
}

// TestKernelDeadPID: -p for a pid that is not alive warns, or fails when no
// watched pid is; procmon ends when the watched processes have ended.
func TestKernelDeadPID(t *testing.T) {
	skipUnlessListen(t)
	dead := runHelper(t, "exit7", 7)
	code, _, stderr := testutil.RunHelperExit(t, timeout, program, "-p", strconv.Itoa(dead))
	if code != 1 || !strings.Contains(stderr, fmt.Sprintf("-p %d: no such process", dead)) {
		t.Errorf("procmon -p %d (reaped): exit %d, stderr %q; want 1 and a warning", dead, code, stderr)
	}
	live := helperCmd(t, "stdin-exit7")
	stdin, err := live.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	mon := startMonitor(t, "-p", strconv.Itoa(dead), "-p", strconv.Itoa(live.Process.Pid))
	mon.Stderr.Find(t, timeout, "the warning", func(s string) bool { return strings.Contains(s, fmt.Sprintf("-p %d: no such process", dead)) })
	stdin.Close()
	if ws := waitStatus(t, live); ws.ExitStatus() != 7 {
		t.Fatalf("workload status %v", ws)
	}
	if code := mon.Wait(t, timeout); code != 0 {
		t.Errorf("procmon exited with %d", code)
	}
	mon.Stderr.Find(t, time.Second, "the end", func(s string) bool { return strings.Contains(s, "every watched process has ended") })
	found := false
	for _, l := range mon.Stdout.All() {
		f := strings.Fields(l)
		if len(f) > 6 && f[1] == "exit" && f[2] == strconv.Itoa(live.Process.Pid) && f[5] == "exit" && f[6] == "7" {
			found = true
		}
	}
	if !found {
		t.Errorf("no exit 7 line for %d:\n%s", live.Process.Pid, mon.Stdout)
	}
}

// TestKernelLongComm: a -comm pattern written for a program name longer than
// the kernel's 15 bytes is announced, and matches by the program's name.
func TestKernelLongComm(t *testing.T) {
	skipUnlessListen(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	long := "procmon-long-name-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 36)
	link := filepath.Join(t.TempDir(), long)
	if err := os.Symlink(exe, link); err != nil {
		t.Fatal(err)
	}
	mon := startMonitor(t, "--json", "-comm", "procmon-long-name-*")
	mon.Stderr.Find(t, timeout, "the warning", func(s string) bool { return strings.Contains(s, "at most 15 bytes") })
	retry(t, func() error {
		mark := mon.Stdout.Len()
		c := exec.Command(link, "x")
		c.Env = append(os.Environ(), helperEnv+"=stdin-exit7")
		ex, ws, err := awaitLiveExec(t, mon, mark, c)
		if err != nil {
			return err
		}
		pid := c.Process.Pid
		if ex.Comm != long[:15] {
			t.Errorf("exec record comm %q, want the kernel's %q", ex.Comm, long[:15])
		}
		x, err := awaitJSON(t, mon, mark, "the exit", func(e jsonEvent) bool { return e.Kind == "exit" && e.PID == pid })
		if err != nil {
			return err
		}
		if x.ExitCode == nil || *x.ExitCode != ws.ExitStatus() {
			t.Errorf("exit record %+v, want status %d", x, ws.ExitStatus())
		}
		return nil
	})
}

// TestKernelTerminalInjection: a name set to terminal escapes is shown
// quoted, never raw.
func TestKernelTerminalInjection(t *testing.T) {
	skipUnlessListen(t)
	mon := startMonitor(t, "-e", "comm,exit", "-p", strconv.Itoa(os.Getpid()))
	retry(t, func() error {
		mark := mon.Stdout.Len()
		pid := strconv.Itoa(runHelper(t, "prctl-name", 5, evilName))
		if _, err := await(t, mon, mark, "the exit", func(s string) bool {
			f := strings.Fields(s)
			return len(f) > 2 && f[1] == "exit" && f[2] == pid
		}); err != nil {
			return err
		}
		line, err := await(t, mon, mark, "the comm line", func(s string) bool {
			f := strings.Fields(s)
			return len(f) > 2 && f[1] == "comm" && f[2] == pid
		})
		if err != nil {
			return err
		}
		if !strings.Contains(line, strconv.Quote(evilName)) {
			t.Errorf("comm line %q does not show the name %q quoted", line, evilName)
		}
		return nil
	})
	for _, l := range mon.Stdout.All() {
		if strings.ContainsRune(l, 0x1b) || strings.HasPrefix(l, "FAKE") {
			t.Errorf("raw escape or forged line in the output: %q", l)
		}
	}
}

// TestKernelShutdownDrains: events queued while stdout was blocked are all
// shown after SIGINT, with the doorbell (the kernel's filter from Linux
// 6.6, the BPF filter before), with the BPF filter on any kernel, and
// without the doorbell (procmon's own wait on the main socket).
func TestKernelShutdownDrains(t *testing.T) {
	skipUnlessListen(t)
	t.Run("default", func(t *testing.T) { shutdownDrains(t) })
	t.Run("bpf-doorbell", func(t *testing.T) { shutdownDrains(t, "-doorbell=bpf") })
	t.Run("no-doorbell", func(t *testing.T) { shutdownDrains(t, "-doorbell=false") })
}

func shutdownDrains(t *testing.T, args ...string) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := testutil.HelperCommand(t, program, append([]string{"-rcvbuf", "67108864", "-p", strconv.Itoa(os.Getpid())}, args...)...)
	cmd.Stdout = w
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	defer func() { _ = cmd.Process.Kill(); r.Close() }()
	errLines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			errLines <- sc.Text()
		}
		close(errLines)
	}()
	for l := range errLines {
		if strings.HasPrefix(l, "procmon: listening") {
			break
		}
	}
	// Nobody reads stdout meanwhile: procmon blocks once the pipe is full
	// and the events wait in the socket.
	const n = 200
	pids := map[string]bool{}
	pad := strings.Repeat("x", 200) // 200 processes, over 120 kB of output: more than a pipe holds
	for range n {
		pids[strconv.Itoa(runHelper(t, "exit7", 7, pad))] = true
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(r)
	var closing string
	for l := range errLines {
		if strings.Contains(l, " received, ") {
			closing = l
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("procmon: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) > 6 && f[1] == "exit" && pids[f[2]] && f[5] == "exit" && f[6] == "7" {
			delete(pids, f[2])
		}
	}
	if len(pids) > 0 && strings.Contains(closing, " 0 lost") {
		t.Errorf("%d of %d exits not shown, and the closing line says %q", len(pids), n, closing)
	} else if len(pids) > 0 {
		t.Logf("%d exits not shown; procmon reported the loss: %s", len(pids), closing)
	}
}

// TestKernelCoredumpWithoutCore: under ulimit -c 0 the coredump line does
// not claim a core, and the exit agrees with waitpid.
func TestKernelCoredumpWithoutCore(t *testing.T) {
	skipUnlessListen(t)
	mon := startMonitor(t, "-e", "coredump,exit", "-p", strconv.Itoa(os.Getpid()))
	retry(t, func() error {
		mark := mon.Stdout.Len()
		c := helperCmd(t, "abort-nocore")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		ws := waitStatus(t, c)
		if !ws.Signaled() || ws.CoreDump() {
			t.Fatalf("workload status %#x: want a signal without core", uint32(ws))
		}
		pid := strconv.Itoa(c.Process.Pid)
		line, err := await(t, mon, mark, "the coredump line", func(s string) bool {
			f := strings.Fields(s)
			return len(f) > 2 && f[1] == "coredump" && f[2] == pid
		})
		if err != nil {
			return err
		}
		if strings.Contains(line, "dumping") || !strings.Contains(line, "core-dump signal") {
			t.Errorf("coredump line %q claims more than the kernel said", line)
		}
		line, err = await(t, mon, mark, "the exit line", func(s string) bool {
			f := strings.Fields(s)
			return len(f) > 2 && f[1] == "exit" && f[2] == pid
		})
		if err != nil {
			return err
		}
		if f := strings.Fields(line); f[5] != unix.SignalName(ws.Signal()) || f[6] == "core" {
			t.Errorf("exit line %q, want %s without core", line, unix.SignalName(ws.Signal()))
		}
		return nil
	})
}

// TestKernelStartLineBuffer: the start line gives the receive buffer size
// applied, not the kernel's doubled figure.
func TestKernelStartLineBuffer(t *testing.T) {
	skipUnlessListen(t)
	asked := 1 << 20
	want := asked
	if os.Geteuid() != 0 {
		// Without CAP_NET_ADMIN the kernel caps it at rmem_max: ask for
		// more, so that the cap and its warning are seen.
		b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
		if err != nil {
			t.Skipf("cannot read rmem_max: %v", err)
		}
		m, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		asked, want = max(asked, m+1<<20), m
	}
	p := testutil.StartHelper(t, program, "-rcvbuf", strconv.Itoa(asked), "-e", "sid")
	line := p.Stderr.FindPrefix(t, timeout, "procmon: listening")
	if !strings.Contains(line, fmt.Sprintf("receive buffer %d bytes", want)) {
		t.Errorf("start line %q, want %d bytes", line, want)
	}
	// A buffer capped below the one asked for is said, with what to do.
	if capped := p.Stderr.String(); want < asked != strings.Contains(capped, "needs CAP_NET_ADMIN") {
		t.Errorf("asked %d, applied %d: stderr %q (a warning naming CAP_NET_ADMIN exactly when capped)", asked, want, capped)
	}
	p.Signal(t, syscall.SIGTERM)
	p.Wait(t, timeout)

	// Without -rcvbuf, its default is not warned about, capped or not
	// (every user without CAP_NET_ADMIN would see the warning, naming a
	// flag not given); the start line gives the size applied.
	p = testutil.StartHelper(t, program, "-e", "sid")
	line = p.Stderr.FindPrefix(t, timeout, "procmon: listening")
	if os.Geteuid() == 0 && !strings.Contains(line, "receive buffer 8388608 bytes") {
		t.Errorf("start line %q, want the default 8388608 bytes", line)
	}
	if s := p.Stderr.String(); strings.Contains(s, "-rcvbuf") {
		t.Errorf("-rcvbuf was not given, but stderr says %q", s)
	}
	p.Signal(t, syscall.SIGTERM)
	p.Wait(t, timeout)
}

// TestKernelJSONBytesAndTTY: arguments that are not UTF-8 come back exactly
// from cmdline_hex, and -tty gives the terminal the workload has.
func TestKernelJSONBytesAndTTY(t *testing.T) {
	skipUnlessListen(t)
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	nr, ok := parseStatTTY(stat)
	if !ok {
		t.Fatalf("cannot parse %q", stat)
	}
	mon := startMonitor(t, "--json", "-tty", "-p", strconv.Itoa(os.Getpid()))
	arg := "bytes\xff\xfe-" + strconv.Itoa(os.Getpid())
	retry(t, func() error {
		mark := mon.Stdout.Len()
		ex, _, err := awaitLiveExec(t, mon, mark, helperCmd(t, "stdin-exit7", arg))
		if err != nil {
			return err
		}
		if len(ex.CmdlineHex) != 2 || ex.CmdlineHex[1] != fmt.Sprintf("%x", arg) {
			t.Errorf("exec record cmdline_hex %q, want the bytes of %q", ex.CmdlineHex, arg)
		}
		if ex.TTY != ttyName(nr) {
			t.Errorf("exec record tty %q, want %q (the workload's tty_nr %#x)", ex.TTY, ttyName(nr), nr)
		}
		return nil
	})
}

func unsafePtr(s string) unsafe.Pointer { return unsafe.Pointer(unsafe.StringData(s)) }

// TestKernelDoorbell: a wait on the doorbell (the kernel's filter from Linux
// 6.6, the BPF filter before) ends at once for an exec, which decodes as
// that exec, and after about bellSlice otherwise.
func TestKernelDoorbell(t *testing.T) {
	b := openTestBell(t, false)
	t0 := time.Now()
	if b.wait() {
		// Another program's exec: the machine is shared.
		t.Log("an exec rang while none was started by the test")
	} else if d := time.Since(t0); d > 5*time.Second {
		// (It may end earlier than the slice: a signal, such as the Go
		// runtime's preemption, ends it.)
		t.Errorf("an empty wait took %v, want about %v", d, bellSlice)
	}
	awaitOwnExec(t, "a wait on the doorbell", b.wait, bellExec(t, b))
}

// BenchmarkStart measures how long procmon takes from its start to
// listening (the "procmon: listening" line), with and without the doorbell
// (which is tried first: on kernels before 6.6 it cannot filter, and used to
// cost a second there). Run it on each kernel of the matrix:
//
//	.ci/matrix -pkgs ./examples/procmon -testflags '-test.run=^$ -test.bench=Start -test.benchtime=5x'
func BenchmarkStart(b *testing.B) {
	if l, err := proc.Listen(nil); err != nil {
		b.Skipf("cannot subscribe to process events: %v", err)
	} else {
		l.Close()
	}
	for _, args := range [][]string{nil, {"-doorbell=false"}} {
		name := "doorbell"
		if args != nil {
			name = "no-doorbell"
		}
		b.Run(name, func(b *testing.B) {
			var total time.Duration
			for range b.N {
				t0 := time.Now()
				p := testutil.StartHelper(b, program, args...)
				p.Stderr.FindPrefix(b, timeout, "procmon: listening")
				total += time.Since(t0)
				p.Signal(b, os.Interrupt)
				p.Wait(b, timeout)
			}
			b.ReportMetric(total.Seconds()*1000/float64(b.N), "ms/start")
		})
	}
}

// TestKernelDoorbellClosed: a wait on a closed doorbell reports an error at
// once (procmon then stops with it) rather than a timeout, which the loop
// would repeat without end.
func TestKernelDoorbellClosed(t *testing.T) {
	b := openTestBell(t, false)
	b.Close()
	if !b.wait() || b.errno == 0 {
		t.Errorf("a wait on a closed doorbell: %d bytes, errno %v; want an error", b.n, b.errno)
	}
}

// TestKernelDoorbellIdle: an idle wait (in the Go poller) ends for an exec,
// with that exec, at its deadline otherwise, and at once for the stop.
func TestKernelDoorbellIdle(t *testing.T) {
	b := openTestBell(t, false)
	awaitOwnExec(t, "an idle wait on the doorbell", func() bool { return b.idleWait(time.Second) }, bellExec(t, b))
	// Drain what other programs' execs left, then time an empty wait.
	for b.idleWait(time.Millisecond) {
	}
	t0 := time.Now()
	if !b.idleWait(50 * time.Millisecond) {
		if d := time.Since(t0); d < 40*time.Millisecond || d > 5*time.Second {
			t.Errorf("an empty idle wait of 50ms took %v", d)
		}
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		b.stop()
	}()
	t0 = time.Now()
	for b.idleWait(10 * time.Second) {
		// Other programs' execs, until the stop ends the wait.
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("the stop ended an idle wait after %v", d)
	}
	t0 = time.Now()
	if b.idleWait(10*time.Second) || time.Since(t0) > time.Second {
		t.Errorf("an idle wait after the stop took %v", time.Since(t0))
	}
}
