//go:build linux

package proc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/cnlink/connector/internal/testutil"
	"golang.org/x/sys/unix"
)

// The test binary re-executes itself to make child processes that cause
// each kind of event: the kernel matrix runs it in VMs holding nothing but
// this binary. testutil.HelperEnv selects the child's behaviour (run by
// runHelper).
// Values the helpers use, asserted by the tests.
const (
	helperUID  = 4321
	helperGID  = 2345
	helperComm = "cnproc-comm"
	// helperComm2 is written to /proc/thread-self/comm.
	helperComm2 = "cnproc-comm-2"
)

func TestMain(m *testing.M) {
	testutil.MainFunc(m, func(mode string, _ []string) int { return runHelper(mode) })
}

// helperCmd returns the command that runs the test binary as the helper
// mode, for tests that start it themselves (with namespaces, say).
func helperCmd(t testing.TB, mode string) *exec.Cmd {
	t.Helper()
	return testutil.HelperCommand(t, mode)
}

// runHelper runs in a child process and returns its exit code.
func runHelper(mode string) int {
	switch mode {
	case "exit3":
		return 3
	case "block":
		// Wait until the parent closes stdin (or kills us).
		_, _ = io.Copy(io.Discard, os.Stdin)
		return 0
	case "setid":
		if err := unix.Setresgid(helperGID, helperGID, helperGID); err != nil {
			fmt.Fprintln(os.Stderr, "setresgid:", err)
			return 10
		}
		if err := unix.Setresuid(helperUID, helperUID, helperUID); err != nil {
			fmt.Fprintln(os.Stderr, "setresuid:", err)
			return 11
		}
		return 0
	case "fsid":
		// Only the filesystem ids change: real and effective stay 0.
		runtime.LockOSThread()
		unix.Setfsuid(helperUID)
		unix.Setfsgid(helperGID)
		return 0
	case "savedid":
		// Only the saved ids change (setresuid(-1, -1, x)).
		if err := unix.Setresgid(-1, -1, helperGID); err != nil {
			fmt.Fprintln(os.Stderr, "setresgid:", err)
			return 10
		}
		if err := unix.Setresuid(-1, -1, helperUID); err != nil {
			fmt.Fprintln(os.Stderr, "setresuid:", err)
			return 11
		}
		return 0
	case "setsid":
		if _, err := unix.Setsid(); err != nil {
			fmt.Fprintln(os.Stderr, "setsid:", err)
			return 10
		}
		return 0
	case "comm":
		runtime.LockOSThread()
		name := append([]byte(helperComm), 0)
		if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&name[0])), 0, 0, 0); err != nil {
			fmt.Fprintln(os.Stderr, "prctl:", err)
			return 10
		}
		if err := os.WriteFile("/proc/thread-self/comm", []byte(helperComm2), 0); err != nil {
			fmt.Fprintln(os.Stderr, "write comm:", err)
			return 11
		}
		return 0
	case "abort":
		// No core file: the coredump event comes anyway.
		_ = unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
		debug.SetTraceback("crash") // the runtime then dies by SIGABRT
		panic("cnproc test helper: deliberate crash")
	case "thread":
		// Keep the main goroutine on the main thread, so the goroutine below
		// runs on another thread, which the runtime ends when that goroutine
		// exits while locked to it.
		runtime.LockOSThread()
		done := make(chan int)
		go func() {
			runtime.LockOSThread()
			done <- unix.Gettid()
		}()
		tid := <-done
		fmt.Println(tid)
		_, _ = io.Copy(io.Discard, os.Stdin)
		return 0
	case "listener":
		return helperListener()
	case "flood":
		return helperFlood()
	case "countdown":
		return helperCountdown()
	case "unpriv":
		return helperUnprivileged()
	case "nslisten-fakeproc":
		// A /proc that is not the kernel's: a tmpfs over it, in this
		// process's own mount namespace.
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			fmt.Fprintln(os.Stderr, "mount private:", err)
			return 30
		}
		if err := unix.Mount("tmpfs", "/proc", "tmpfs", 0, ""); err != nil {
			fmt.Fprintln(os.Stderr, "mount tmpfs:", err)
			return 31
		}
		start := time.Now()
		_, err := Listen(&Config{AckTimeout: time.Second})
		took := time.Since(start)
		switch {
		case errors.Is(err, ErrNamespace):
			fmt.Printf("ErrNamespace %d\n", took.Milliseconds())
		case errors.Is(err, ErrNoAck):
			fmt.Printf("ErrNoAck %d %v\n", took.Milliseconds(), err)
		default:
			fmt.Printf("other %d %v\n", took.Milliseconds(), err)
		}
		return 0
	case "nslisten":
		l, err := Listen(&Config{AckTimeout: 200 * time.Millisecond})
		switch {
		case err == nil:
			l.Close()
			fmt.Println("ok")
		case errors.Is(err, ErrNamespace):
			fmt.Println("ErrNamespace")
		default:
			fmt.Println("other:", err)
		}
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 99
}

// helperListener listens in a separate process and prints the pid of every
// exec, until stdin is closed.
func helperListener() int {
	l, err := Listen(&Config{Kinds: KindExec, ReadBufferSize: 32 << 20})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		l.Close()
	}()
	fmt.Println("ready")
	var ev Event
	for {
		if err := l.Next(&ev); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return 0
			}
			fmt.Println("error:", err)
			return 1
		}
		switch ev.Kind {
		case KindExec:
			fmt.Println(ev.TGID)
		case KindLost:
			fmt.Println("lost")
		}
	}
}

// child is a running helper process.
type child struct {
	p    *testutil.Proc
	read int // stdout lines consumed by line
}

// startHelper starts the test binary in helper mode. The child is killed
// and reaped when the test ends.
func startHelper(t testing.TB, mode string, attr *syscall.SysProcAttr) *child {
	t.Helper()
	cmd := helperCmd(t, mode)
	cmd.SysProcAttr = attr
	return &child{p: testutil.Start(t, cmd)}
}

func (c *child) pid() int32 { return int32(c.p.Cmd.Process.Pid) }

// line reads the next line the child printed, failing the test after
// timeout.
func (c *child) line(t testing.TB, timeout time.Duration) string {
	t.Helper()
	s, err := c.p.Stdout.WaitFrom(c.read, timeout, func(string) bool { return true })
	if err != nil {
		_ = c.p.Cmd.Process.Kill()
		t.Fatalf("reading helper output: %v", err)
	}
	c.read++
	return strings.TrimSpace(s)
}

// wait closes the child's stdin, waits for it to exit and returns its wait
// status.
func (c *child) wait(t testing.TB) syscall.WaitStatus {
	t.Helper()
	_ = c.p.Stdin.Close()
	return c.p.WaitState(t, eventTimeout).Sys().(syscall.WaitStatus)
}

// runHelperProc runs a helper to completion and returns its pid.
func runHelperProc(t testing.TB, mode string) int32 {
	t.Helper()
	c := startHelper(t, mode, nil)
	c.wait(t)
	return c.pid()
}

// eventTimeout bounds every wait for an event. Generous: the kernel matrix
// runs tests under emulation.
const eventTimeout = 20 * time.Second

func dump(evs []Event) string {
	var sb strings.Builder
	for i := range evs {
		sb.WriteString("  ")
		sb.WriteString(evs[i].String())
		sb.WriteByte('\n')
	}
	return sb.String()
}

// of returns a keep function for events about process pid (its threads
// included).
func of(pid int32) func(*Event) bool {
	return func(ev *Event) bool { return ev.TGID == pid && ev.Kind != KindLost }
}

// until returns a done function that reports true once an event satisfying
// pred was collected.
func until(pred func(*Event) bool) func([]Event) bool {
	return func(evs []Event) bool {
		for i := range evs {
			if pred(&evs[i]) {
				return true
			}
		}
		return false
	}
}

func exitOf(pid int32) func(*Event) bool {
	return func(ev *Event) bool { return ev.Kind == KindExit && ev.PID == pid }
}

// find returns the first event of kind k, failing the test if there is none.
func find(t testing.TB, evs []Event, k Kind, pred func(*Event) bool) *Event {
	t.Helper()
	for i := range evs {
		if evs[i].Kind == k && (pred == nil || pred(&evs[i])) {
			return &evs[i]
		}
	}
	t.Fatalf("no %v event among:\n%s", k, dump(evs))
	return nil
}

// listen opens a Listener for a test, skipping only where the kernel or
// privileges really lack what is needed, and closes it at the end.
func listen(t testing.TB, cfg *Config) *Listener {
	t.Helper()
	if cfg == nil {
		cfg = &Config{}
	}
	if cfg.ReadBufferSize == 0 {
		// Room for about 40000 events: other programs on the machine may
		// cause events faster than a race-enabled test binary reads them.
		cfg.ReadBufferSize = 32 << 20
	}
	l, err := Listen(cfg)
	requireListener(t, "Listen", err)
	t.Cleanup(func() { l.Close() })
	return l
}

// requireListener skips t where err says the kernel or the privileges lack
// what a Listener needs (CONFIG_PROC_EVENTS; CAP_NET_ADMIN when not root),
// and fails it, naming what, for any other error.
func requireListener(t testing.TB, what string, err error) {
	t.Helper()
	switch {
	case err == nil:
	case errors.Is(err, ErrNoProcEvents):
		t.Skipf("kernel lacks CONFIG_PROC_EVENTS: %v", err)
	case errors.Is(err, os.ErrPermission) && os.Geteuid() != 0:
		t.Skipf("not root and the kernel needs CAP_NET_ADMIN: %v", err)
	default:
		t.Fatalf("%s: %v", what, err)
	}
}

// A recorder reads a Listener in the background, so that the socket keeps
// draining while a test waits for its children, and keeps the most recent
// events in a ring. On a busy machine events may still be lost; tests then
// repeat their scenario (see scenario).
type recorder struct {
	l     *Listener
	check func(*Event) // called for every event, in the reading goroutine

	mu      sync.Mutex
	ring    []Event
	n       uint64 // events recorded so far
	lost    uint64 // KindLost events so far
	err     error
	notify  chan struct{}
	stopped chan struct{}
}

const ringSize = 1 << 16

// record starts a recorder on l; check, if not nil, sees every event. The
// recorder stops when the test ends.
func record(t testing.TB, l *Listener, check func(*Event)) *recorder {
	r := &recorder{l: l, check: check, ring: make([]Event, ringSize), notify: make(chan struct{}), stopped: make(chan struct{})}
	go r.run()
	t.Cleanup(func() {
		l.Close()
		<-r.stopped
	})
	return r
}

func (r *recorder) run() {
	defer close(r.stopped)
	var ev Event
	for {
		err := r.l.Next(&ev)
		if err == nil && r.check != nil {
			r.check(&ev)
		}
		r.mu.Lock()
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				r.err = err
			}
			close(r.notify)
			r.mu.Unlock()
			return
		}
		if ev.Kind == KindLost {
			r.lost++
		}
		e := &r.ring[r.n%ringSize]
		*e = ev
		e.Raw = append([]byte(nil), ev.Raw...)
		r.n++
		close(r.notify)
		r.notify = make(chan struct{})
		r.mu.Unlock()
	}
}

// mark returns the position of the next event.
func (r *recorder) mark() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// await waits until done reports complete the events since mark that keep
// selects. It returns false if events may have been lost since mark (a loss
// was reported, or the ring overflowed) and none arrived for a while; it
// fails the test after eventTimeout otherwise.
func (r *recorder) await(t testing.TB, mark uint64, keep func(*Event) bool, done func([]Event) bool) ([]Event, bool) {
	t.Helper()
	deadline := time.Now().Add(eventTimeout)
	r.mu.Lock()
	lost0 := r.lost
	r.mu.Unlock()
	// While a socket stays congested after the overrun it reported, the
	// kernel drops further events without another report: its drop
	// counter shows them.
	drops0, _ := r.l.Drops()
	for {
		r.mu.Lock()
		var evs []Event
		from := mark
		overflow := r.n-mark > ringSize
		if overflow {
			from = r.n - ringSize
		}
		for i := from; i < r.n; i++ {
			if e := &r.ring[i%ringSize]; keep(e) {
				evs = append(evs, *e)
			}
		}
		// Events that fell out of the ring may be among those done
		// needs: an overflow counts as a loss, never as complete.
		complete := done(evs) && !overflow
		maybeLost := overflow || r.lost > lost0 || (mark == 0 && r.lost > 0)
		if d, err := r.l.Drops(); err == nil && d > drops0 {
			maybeLost = true
		}
		err, ch := r.err, r.notify
		r.mu.Unlock()
		if complete {
			return evs, true
		}
		if err != nil {
			t.Fatalf("Next: %v\nevents so far:\n%s", err, dump(evs))
		}
		wait := time.Until(deadline)
		if maybeLost {
			wait = min(wait, 3*time.Second)
		}
		select {
		case <-ch:
		case <-time.After(wait):
			if maybeLost {
				return evs, false
			}
			t.Fatalf("timed out after %v; events so far:\n%s", eventTimeout, dump(evs))
		}
	}
}

// scenario runs start, which starts a child and returns its pid, and waits
// until done reports the child's events complete. If events were lost on
// the way (the machine is busy), it runs start again, five times at most.
func (r *recorder) scenario(t testing.TB, start func() int32, done func(pid int32) func([]Event) bool) (int32, []Event) {
	t.Helper()
	for range 5 {
		m := r.mark()
		pid := start()
		evs, ok := r.await(t, m, of(pid), done(pid))
		if ok {
			return pid, evs
		}
		t.Logf("events were lost under load; trying again")
	}
	t.Fatal("events were lost in each of 5 attempts: the machine is too busy")
	return 0, nil
}

// helperRun returns a start function for scenario that runs a helper to
// completion.
func helperRun(t testing.TB, mode string) func() int32 {
	return func() int32 { return runHelperProc(t, mode) }
}

// untilExit returns a done function for scenario: the child's main thread
// exited.
func untilExit(pid int32) func([]Event) bool { return until(exitOf(pid)) }

// A workload runs rounds of children of this process and follows their fork
// and exit events on a Listener, so that a test can require every event
// delivered or its loss reported.
type workload struct {
	l    *Listener
	mu   sync.Mutex
	seen map[int32]Kind // per child: KindFork, KindExit as they arrive
	lost uint64         // KindLost records
	wake chan struct{}
}

// trackChildren starts reading l (with record) for the workload's events.
// A child's exit is recognised by its pid once its fork was seen, not by its
// parent: the kernel names the parent only until the parent reaps the
// child (see Event.ParentPID), and runHelperProc reaps at once.
func trackChildren(t testing.TB, l *Listener) *workload {
	w := &workload{l: l, seen: map[int32]Kind{}, wake: make(chan struct{}, 1)}
	me := int32(os.Getpid())
	record(t, l, func(e *Event) {
		w.mu.Lock()
		defer w.mu.Unlock()
		switch {
		case e.Kind == KindLost:
			w.lost++
		case e.Kind == KindFork && e.PID == e.TGID && e.ParentTGID == me:
			w.seen[e.PID] |= KindFork
		case e.Kind == KindExit && e.PID == e.TGID && w.seen[e.PID] == KindFork:
			w.seen[e.PID] |= KindExit
		default:
			return
		}
		select {
		case w.wake <- struct{}{}:
		default:
		}
	})
	return w
}

// rounds runs rounds of n children, at most max, until one delivers every
// fork and exit event. A round in which a loss was reported is repeated
// (other programs' event storms may overrun even a large buffer); a round
// with an event missing and no loss reported fails the test at once, as
// does the last round with loss. It returns the events the last round
// delivered (2n).
func (w *workload) rounds(t testing.TB, n, max int) int {
	t.Helper()
	for round := 1; ; round++ {
		w.mu.Lock()
		lost0 := w.lost
		w.mu.Unlock()
		var pids []int32
		for range n {
			pids = append(pids, runHelperProc(t, "exit3"))
		}
		// Wait for the round to complete; once a loss is reported, for
		// 3 s at most, as the missing events may be among it.
		deadline := time.Now().Add(eventTimeout)
		lossSeen := false
		for {
			w.mu.Lock()
			delivered := 0
			var missing []string
			for _, p := range pids {
				switch k := w.seen[p]; k {
				case KindFork | KindExit:
					delivered += 2
				case KindFork:
					delivered++
					fallthrough
				default:
					missing = append(missing, fmt.Sprintf("%d (seen %v)", p, k))
				}
			}
			if !lossSeen && w.lost > lost0 {
				lossSeen = true
				deadline = time.Now().Add(3 * time.Second)
			}
			w.mu.Unlock()
			if delivered == 2*n {
				return delivered
			}
			wait := time.Until(deadline)
			if wait <= 0 {
				switch {
				case !lossSeen:
					// Every event is delivered or its loss reported: a
					// silent miss fails.
					t.Fatalf("round %d: %d of the workload's %d fork and exit events delivered, no loss reported (missing %v); stats %+v", round, delivered, 2*n, missing, w.l.Stats())
				case round == max:
					t.Fatalf("in %d rounds, events were lost (reported) each time; last round %d of %d delivered; stats %+v", max, delivered, 2*n, w.l.Stats())
				}
				t.Logf("round %d: events were lost, and reported (stats %+v); repeating", round, w.l.Stats())
				break
			}
			select {
			case <-w.wake:
			case <-time.After(wait):
			}
		}
	}
}
