package dmlog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/dmioctl"
	"github.com/cnlink/connector/internal/testutil"
	"golang.org/x/sys/unix"
)

// The integration tests drive the real dm-log-userspace: a mirror on two
// dm-zero legs, made with device-mapper ioctls, whose log requests this
// package's Server answers. They need the modules dm-mod, dm-log,
// dm-region-hash, dm-mirror, dm-zero and dm-log-userspace, which the kernel
// matrix loads (testdata/kmatrix-modules); the host has none, so there they
// skip, saying so. Inside the matrix (KMATRIX=1) a missing prerequisite
// fails the test instead.

func TestMain(m *testing.M) {
	testutil.Main(m, map[string]testutil.HelperFunc{"nocap-reply": nocapReplyHelper})
}

const (
	legSectors = 8192
	regionSize = 1024
)

// requireDMLog skips (on the host) or fails (in the matrix) unless the
// device-mapper modules are loaded and dm-log-userspace has registered its
// connector callback.
func requireDMLog(t *testing.T) {
	t.Helper()
	testutil.RequireDMLog(t, "./dmlog")
}

// seen is one request as the test saw it.
type seen struct {
	req Request
	raw []byte
	at  time.Time
}

// harness runs a Server on its own receive loop, recording every request
// and letting a test intercept some.
type harness struct {
	t  *testing.T
	c  *connector.Conn
	s  *Server
	mu sync.Mutex
	// log is every request received, in order; changed is closed and
	// replaced on each append.
	log     []seen
	changed chan struct{}
	// intercept, if it returns true, has dealt with the request itself.
	intercept func(h *harness, m connector.Message, r seen) bool
	done      chan struct{}
}

func startHarness(t *testing.T, s *Server, intercept func(*harness, connector.Message, seen) bool) *harness {
	t.Helper()
	return startHarnessBuffer(t, s, intercept, ReadBufferSize)
}

// startHarnessBuffer starts a harness whose socket has a receive buffer of
// rcvbuf bytes (the kernel's minimum if smaller).
func startHarnessBuffer(t *testing.T, s *Server, intercept func(*harness, connector.Message, seen) bool, rcvbuf int) *harness {
	t.Helper()
	c, err := connector.Dial(&connector.Config{Groups: []connector.Group{connector.IDDM.Group()}, ReadBufferSize: rcvbuf})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, c: c, s: s, changed: make(chan struct{}), intercept: intercept, done: make(chan struct{})}
	go h.loop()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.c.Close()
	<-h.done
}

func (h *harness) loop() {
	defer close(h.done)
	r := h.c.NewReader()
	defer r.Release()
	for {
		m, from, err := r.Next()
		if errors.Is(err, connector.ErrClosed) {
			return
		}
		if errors.Is(err, connector.ErrOverrun) {
			h.s.overrun(err) // as Serve's OnError does
			continue
		}
		if err != nil {
			h.t.Errorf("harness receive: %v", err)
			continue
		}
		if !from.Kernel() || m.ID != connector.IDDM {
			continue
		}
		raw := append([]byte(nil), m.Data...)
		req, _ := ParseRequest(raw)
		sn := seen{req: req, raw: raw, at: time.Now()}
		h.mu.Lock()
		h.log = append(h.log, sn)
		close(h.changed)
		h.changed = make(chan struct{})
		h.mu.Unlock()
		if h.intercept != nil && h.intercept(h, m, sn) {
			continue
		}
		h.s.handle(m, from, h.c.Send)
	}
}

// waitFor waits for the first request of type typ at index from or later
// and returns its index.
func (h *harness) waitFor(typ RequestType, from int, timeout time.Duration) (int, seen) {
	h.t.Helper()
	deadline := time.After(timeout)
	for {
		h.mu.Lock()
		for i := from; i < len(h.log); i++ {
			if h.log[i].req.Type == typ {
				s := h.log[i]
				h.mu.Unlock()
				return i, s
			}
		}
		ch := h.changed
		h.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			h.t.Fatalf("no %v request within %v; seen: %v", typ, timeout, h.types())
		}
	}
}

func (h *harness) types() []RequestType {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ts []RequestType
	for _, s := range h.log {
		ts = append(ts, s.req.Type)
	}
	return ts
}

func (h *harness) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.log)
}

// logSeeds prints the captured requests for the fuzz corpus
// (testdata/kernel-requests.txt), one of each type.
func (h *harness) logSeeds() {
	h.mu.Lock()
	defer h.mu.Unlock()
	done := map[RequestType]bool{}
	for _, s := range h.log {
		if done[s.req.Type] || !s.req.Type.Valid() {
			continue
		}
		done[s.req.Type] = true
		h.t.Logf("seed %s %v %s", os.Getenv("KMATRIX_KERNEL"), s.req.Type, hex.EncodeToString(s.raw))
	}
}

// dmEnv is the device-mapper side of a test: two dm-zero legs and the
// names of what the test creates, removed at cleanup.
type dmEnv struct {
	t    *testing.T
	ctl  *dmioctl.Control
	pfx  string
	legs [2]string // "major:minor"
	dir  string
	// mirror is the mirror device's name while it exists.
	mirror string
}

func newDMEnv(t *testing.T) *dmEnv {
	t.Helper()
	ctl, err := dmioctl.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctl.Close() })
	e := &dmEnv{t: t, ctl: ctl, pfx: fmt.Sprintf("dmlogtest-%d-%s", os.Getpid(), strings.ToLower(strings.TrimPrefix(t.Name(), "TestIntegration"))), dir: t.TempDir()}
	e.pfx = strings.NewReplacer("/", "-", " ", "-").Replace(e.pfx)
	for i := range e.legs {
		name := fmt.Sprintf("%s-z%d", e.pfx, i)
		dev, err := ctl.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := ctl.Remove(name); err != nil {
				t.Errorf("removing %s: %v", name, err)
			}
		})
		if err := ctl.Load(name, 0, legSectors, "zero", ""); err != nil {
			t.Fatal(err)
		}
		if err := ctl.Resume(name); err != nil {
			t.Fatal(err)
		}
		e.legs[i] = dmioctl.DevString(dev)
	}
	return e
}

func (e *dmEnv) uuid() string { return e.pfx + "-log" }

// mirrorTable is the mirror's parameter string with a userspace log.
func (e *dmEnv) mirrorTable(extra ...string) string {
	args := append([]string{e.uuid(), "core", fmt.Sprint(regionSize)}, extra...)
	return fmt.Sprintf("userspace %d %s 2 %s 0 %s 0", len(args), strings.Join(args, " "), e.legs[0], e.legs[1])
}

// createMirror creates the mirror device (no table yet) and registers its
// removal; a server must then still run (cleanups run last-in first-out).
func (e *dmEnv) createMirror() (string, uint64) {
	e.t.Helper()
	name := e.pfx + "-m"
	dev, err := e.ctl.Create(name)
	if err != nil {
		e.t.Fatal(err)
	}
	e.mirror = name
	e.t.Cleanup(func() {
		if err := e.removeMirror(); err != nil {
			e.t.Errorf("removing %s: %v", name, err)
		}
	})
	return name, dev
}

// loadMirror creates the mirror (createMirror) and loads its table with
// the userspace log (mirrorTable with extra), which waits for the log
// server's answers to the constructor and the region size.
func (e *dmEnv) loadMirror(extra ...string) (string, uint64) {
	e.t.Helper()
	name, dev := e.createMirror()
	if err := e.ctl.Load(name, 0, legSectors, "mirror", e.mirrorTable(extra...)); err != nil {
		e.t.Fatalf("loading the mirror table: %v", err)
	}
	return name, dev
}

// removeMirror removes the mirror if it still exists.
func (e *dmEnv) removeMirror() error {
	if e.mirror == "" {
		return nil
	}
	err := e.ctl.Remove(e.mirror)
	if errors.Is(err, unix.ENXIO) {
		err = nil
	}
	if err == nil {
		e.mirror = ""
	}
	return err
}

// TestIntegrationLifeCycle loads a mirror with our server as its log, writes
// and reads through it, reads its status, suspends and removes it, and checks
// the requests the kernel sent at each step (measured on all four kernels in
// agents.md 2.2).
func TestIntegrationLifeCycle(t *testing.T) {
	requireDMLog(t)
	s := &Server{}
	h := startHarness(t, s, nil)
	e := newDMEnv(t)
	name, dev := e.loadMirror()
	i, ctr := h.waitFor(TypeCtr, 0, time.Second)
	if i != 0 {
		t.Errorf("first request %v, want CTR", h.types())
	}
	sectors, args, err := ctr.req.CtrArgs()
	if err != nil || sectors != legSectors || strings.Join(args, " ") != "core 1024" || ctr.req.UUID != e.uuid() || ctr.req.Version != Version {
		t.Errorf("CTR %v: %d %q %v", ctr.req, sectors, args, err)
	}
	if ctr.raw[len(ctr.raw)-1] == 0 {
		t.Errorf("first CTR string ends in a NUL: %q", ctr.req.Data)
	}
	if ctr.req.LUID == 0 {
		t.Error("luid 0; the kernel sends the address of its log context")
	}
	if _, r := h.waitFor(TypeGetRegionSize, i+1, time.Second); r.req.LUID != ctr.req.LUID {
		t.Errorf("GET_REGION_SIZE luid %#x, CTR's %#x", r.req.LUID, ctr.req.LUID)
	}
	n := h.count()
	if err := e.ctl.Resume(name); err != nil {
		t.Fatalf("resuming the mirror: %v", err)
	}
	h.waitFor(TypeResume, n, time.Second)
	// The new log has every region out of sync: the kernel copies leg 0 to
	// leg 1 region by region. A write to a region not yet in sync goes to
	// leg 0 only, unmarked, so wait for the resync to end.
	i = 0
	for range legSectors / regionSize {
		i, _ = h.waitFor(TypeSetRegionSync, i, 30*time.Second)
		i++
	}

	// One 4 KiB write into region 2, then the marks and clears.
	n = h.count()
	off := int64(2 * regionSize * 512)
	if _, err := dmioctl.DirectIO(e.dir, dev, off, true, 0xa5); err != nil {
		t.Fatalf("writing through the mirror: %v", err)
	}
	mi, mark := h.waitFor(TypeMarkRegion, n, 5*time.Second)
	if rs, _ := mark.req.AppendRegions(nil); len(rs) != 1 || rs[0] != 2 {
		t.Errorf("MARK_REGION %v, want [2]", rs)
	}
	fi, _ := h.waitFor(TypeFlush, mi+1, 5*time.Second)
	ci, clr := h.waitFor(TypeClearRegion, fi+1, 10*time.Second)
	if rs, _ := clr.req.AppendRegions(nil); len(rs) != 1 || rs[0] != 2 {
		t.Errorf("CLEAR_REGION %v, want [2]", rs)
	}
	h.waitFor(TypeFlush, ci+1, 5*time.Second)
	// dm-zero discards writes and reads zeros: what comes back shows the
	// read was served through the mirror, not that data was stored.
	got, err := dmioctl.DirectIO(e.dir, dev, off, false, 0)
	if err != nil {
		t.Fatalf("reading through the mirror: %v", err)
	}
	for _, b := range got {
		if b != 0 {
			t.Fatalf("read back %#x from dm-zero legs, want zeros", b)
		}
	}

	// The status line carries the log's STATUS_INFO answer.
	n = h.count()
	st, err := e.ctl.Status(name, false)
	if err != nil {
		t.Fatal(err)
	}
	h.waitFor(TypeStatusInfo, n, time.Second)
	if !strings.HasSuffix(strings.TrimSpace(st), "1 memlog") || !strings.Contains(st, "/8 ") {
		t.Errorf("status %q: want 8 regions and the log's \"1 memlog\"", st)
	}
	tbl, err := e.ctl.Status(name, true)
	if err != nil || !strings.Contains(tbl, "userspace 3 "+e.uuid()+" core 1024") {
		t.Errorf("table %q %v", tbl, err)
	}

	n = h.count()
	if err := e.ctl.Suspend(name); err != nil {
		t.Fatal(err)
	}
	pi, _ := h.waitFor(TypePresuspend, n, time.Second)
	h.waitFor(TypePostsuspend, pi+1, time.Second)
	l, _ := s.Log(e.uuid(), ctr.req.LUID)
	if ml, ok := l.(*MemLog); !ok || ml.Stats().Marks == 0 || !ml.Stats().Suspended {
		t.Errorf("the log did not see the write or the suspend: %+v", l)
	}
	n = h.count()
	if err := e.removeMirror(); err != nil {
		t.Fatal(err)
	}
	h.waitFor(TypeDtr, n, time.Second)
	if st := s.Stats(); st.Logs != 0 || st.Errors != 0 || st.SendErrors != 0 {
		t.Errorf("server stats %+v", st)
	}
	h.logSeeds()
	t.Logf("requests: %v", h.types())
}

// TestIntegrationNoServer: with nobody on group 7 the table load fails at
// once (the kernel's multicast finds no listener: ESRCH).
func TestIntegrationNoServer(t *testing.T) {
	requireDMLog(t)
	e := newDMEnv(t)
	name, _ := e.createMirror()
	start := time.Now()
	err := e.ctl.Load(name, 0, legSectors, "mirror", e.mirrorTable())
	took := time.Since(start)
	if !errors.Is(err, unix.EINVAL) {
		t.Fatalf("table load without a server: %v, want EINVAL", err)
	}
	if took > 5*time.Second { // measured 1 to 80 ms, 1.3 s once under a loaded TCG
		t.Errorf("the load failed after %v; the kernel fails it without waiting (its timeout is 15 s)", took)
	}
	t.Logf("failed after %v", took)
}

// TestIntegrationEAGAIN: a len-0 reply with ack EAGAIN makes the kernel
// resend the request at once, under a new seq.
func TestIntegrationEAGAIN(t *testing.T) {
	requireDMLog(t)
	var first *seen
	h := startHarness(t, &Server{}, func(h *harness, m connector.Message, r seen) bool {
		if r.req.Type != TypeGetRegionSize || first != nil {
			return false
		}
		first = &r
		if err := h.c.Send(connector.Message{ID: connector.IDDM, Seq: m.Seq, Ack: uint32(syscall.EAGAIN)}); err != nil {
			h.t.Errorf("sending EAGAIN: %v", err)
		}
		return true
	})
	e := newDMEnv(t)
	e.loadMirror()
	i, _ := h.waitFor(TypeGetRegionSize, 0, time.Second)
	_, again := h.waitFor(TypeGetRegionSize, i+1, time.Second)
	if again.req.Seq == first.req.Seq || again.req.LUID != first.req.LUID || string(again.req.Data) != string(first.req.Data) {
		t.Errorf("resend %v after %v, want the same request under a new seq", again.req, first.req)
	}
	t.Logf("resent %v after the EAGAIN", again.at.Sub(first.at))
}

// TestIntegrationUnprivilegedReply: a reply from a process without
// CAP_SYS_ADMIN is ignored; the request still waits for a real one.
func TestIntegrationUnprivilegedReply(t *testing.T) {
	requireDMLog(t)
	ctrs := make(chan seen, 1)
	h := startHarness(t, &Server{}, func(h *harness, m connector.Message, r seen) bool {
		if r.req.Type == TypeCtr && len(ctrs) == 0 && r.req.Seq != 0 {
			ctrs <- r
			return true // answered below
		}
		return false
	})
	e := newDMEnv(t)
	name, _ := e.createMirror()
	loaded := make(chan error, 1)
	go func() { loaded <- e.ctl.Load(name, 0, legSectors, "mirror", e.mirrorTable()) }()
	var ctr seen
	select {
	case ctr = <-ctrs:
	case <-time.After(5 * time.Second):
		t.Fatal("no CTR")
	}
	// A process without CAP_SYS_ADMIN answers first, with an error that
	// would fail the load if the kernel took it.
	out, err := testutil.RunHelper(t, 10*time.Second, "nocap-reply", hex.EncodeToString(ctr.raw))
	if err != nil || strings.TrimSpace(string(out)) != "sent" {
		t.Fatalf("unprivileged helper: %q %v", out, err)
	}
	// The helper's send returned, so the kernel has already run its
	// callback on it (connector callbacks run in the sender's system
	// call). Now the real answer.
	m := connector.Message{ID: connector.IDDM, Seq: ctr.req.Seq, Data: ctr.raw}
	h.s.handle(m, connector.Sender{}, h.c.Send)
	if err := <-loaded; err != nil {
		t.Fatalf("the table load failed (%v): the kernel took the unprivileged EIO reply", err)
	}
}

// nocapReplyHelper drops CAP_SYS_ADMIN and answers the request given in
// hex with EIO.
func nocapReplyHelper(args []string) int {
	runtime.LockOSThread() // credentials are per thread; never unlocked
	raw, err := hex.DecodeString(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	req, err := ParseRequest(raw)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := testutil.DropCapabilityThread(unix.CAP_SYS_ADMIN); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	if has, err := testutil.HasCapability(unix.CAP_SYS_ADMIN); err != nil || has {
		fmt.Fprintln(os.Stderr, "CAP_SYS_ADMIN still effective")
		return 3
	}
	c, err := connector.Dial(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 4
	}
	defer c.Close()
	b, err := AppendReply(nil, req.Header, syscall.EIO, nil)
	if err == nil {
		err = c.Send(connector.Message{ID: connector.IDDM, Seq: req.Seq, Data: b})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 5
	}
	fmt.Println("sent")
	return 0
}

// serveFor runs s.Serve on a new Conn until the returned stop is called.
func serveFor(t *testing.T, s *Server) (stop func()) {
	t.Helper()
	c, err := connector.Dial(&connector.Config{Groups: []connector.Group{connector.IDDM.Group()}, ReadBufferSize: ReadBufferSize})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, c) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Serve: %v", err)
			}
			c.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

// kmsgWaiter reads the kernel log from now on.
type kmsgWaiter struct {
	f     *os.File
	lines chan string
}

func newKmsgWaiter(t *testing.T) *kmsgWaiter {
	t.Helper()
	f, err := os.Open("/dev/kmsg")
	if err != nil {
		t.Fatalf("opening the kernel log: %v", err)
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		t.Fatalf("seeking the kernel log: %v", err)
	}
	w := &kmsgWaiter{f: f, lines: make(chan string, 256)}
	go func() {
		defer close(w.lines)
		r := bufio.NewReader(f)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			select {
			case w.lines <- line:
			default:
			}
		}
	}()
	t.Cleanup(func() { f.Close() })
	return w
}

func (w *kmsgWaiter) waitFor(t *testing.T, substr string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-w.lines:
			if !ok {
				t.Fatalf("kernel log closed before %q", substr)
			}
			if strings.Contains(l, substr) {
				return
			}
		case <-deadline:
			t.Fatalf("no kernel message %q within %v", substr, timeout)
		}
	}
}

// TestIntegrationRestart: the server goes away while the mirror is in use.
// Blocked I/O resumes once a new server answers the constructor the kernel
// re-sends, whether the new server was absent when the request came (the
// kernel's multicast failed) or present but without the log (it answers
// ESRCH).
func TestIntegrationRestart(t *testing.T) {
	requireDMLog(t)
	trace := func(ch chan<- Trace) func(Trace) {
		return func(tr Trace) {
			select {
			case ch <- tr:
			default:
			}
		}
	}
	e := newDMEnv(t)
	stopA := serveFor(t, &Server{})
	// nosync: the logs start in sync, so the kernel has no recovery to do.
	name, dev := e.loadMirror("nosync")
	if err := e.ctl.Resume(name); err != nil {
		t.Fatal(err)
	}
	parent := t
	for _, absent := range []bool{true, false} {
		t.Run(fmt.Sprintf("absent=%v", absent), func(t *testing.T) {
			// The server goes while the mirror is suspended, so that no
			// request is in flight: a request the server received but never
			// answered would hold the mirror for the kernel's 15 s.
			if err := e.ctl.Suspend(name); err != nil {
				t.Fatal(err)
			}
			kmsg := newKmsgWaiter(t)
			stopA()
			traces := make(chan Trace, 256)
			b := &Server{Trace: trace(traces)}
			if !absent {
				stopA = serveFor(parent, b)
			}
			// The kernel's RESUME finds no server (or one without the log)
			// and fails; the mirror resumes anyway ("log resume failed").
			if err := e.ctl.Resume(name); err != nil {
				t.Fatal(err)
			}
			wrote := make(chan error, 1)
			start := time.Now()
			go func() {
				_, err := dmioctl.DirectIO(e.dir, dev, 3*regionSize*512, true, 0x5a)
				wrote <- err
			}()
			kmsg.waitFor(t, "Userspace log server not found", 10*time.Second)
			if absent {
				stopA = serveFor(parent, b)
			}
			next := func() Trace {
				select {
				case tr := <-traces:
					return tr
				case <-time.After(10 * time.Second):
					t.Fatal("the new server got no request within 10 s")
				}
				panic("unreachable")
			}
			var got []RequestType
			for {
				tr := next()
				got = append(got, tr.Request.Type)
				if tr.Request.Type == TypeCtr {
					break
				}
			}
			if tr := next(); tr.Request.Type != TypeResume {
				t.Errorf("after the re-sent CTR: %v, want RESUME", tr.Request.Type)
			}
			select {
			case err := <-wrote:
				if err != nil {
					t.Fatalf("the blocked write failed: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the blocked write did not resume")
			}
			st := b.Stats()
			if st.Logs != 1 || st.Reconstructed != 0 {
				t.Errorf("new server stats %+v", st)
			}
			if !absent && st.UnknownLog == 0 {
				t.Errorf("the present server answered no request with ESRCH: %+v", st)
			}
			t.Logf("requests before the CTR: %v; write blocked %v", got, time.Since(start))
		})
	}
	// Remove the mirror while the last server runs (it gets the DTR).
	if err := e.removeMirror(); err != nil {
		t.Fatal(err)
	}
}

// resendKernel is the one matrix kernel that runs the 15 s resend test.
const resendKernel = "6.12"

// TestMatrixResendAfterTimeout: an unanswered request is resent after 15 s
// under a new seq, and a late answer to the old seq is ignored. It costs
// 15 s, so the matrix runs it on one kernel only (named TestMatrix* so that
// its skip elsewhere is not an integration test skipped).
func TestMatrixResendAfterTimeout(t *testing.T) {
	if k := testutil.MatrixKernel(); !strings.HasPrefix(k, resendKernel) {
		t.Skipf("runs on the %s matrix kernel only (it waits 15 s); this is %q", resendKernel, k)
	}
	requireDMLog(t)
	var first *seen
	h := startHarness(t, &Server{}, func(h *harness, m connector.Message, r seen) bool {
		if r.req.Type != TypeGetRegionSize {
			return false
		}
		if first == nil {
			first = &r // left unanswered
			return true
		}
		// The resend: answer the old seq first, with a region size that
		// would show in the mirror's region count if it were taken.
		b, _ := AppendReply(nil, first.req.Header, 0, AppendUint64(nil, 2*regionSize))
		if err := h.c.Send(connector.Message{ID: connector.IDDM, Seq: first.req.Seq, Data: b}); err != nil {
			h.t.Errorf("late reply: %v", err)
		}
		return false // the server answers the new seq: 1024
	})
	e := newDMEnv(t)
	name, _ := e.loadMirror()
	i, _ := h.waitFor(TypeGetRegionSize, 0, time.Second)
	_, again := h.waitFor(TypeGetRegionSize, i+1, time.Second)
	wait := again.at.Sub(first.at)
	if wait < RetryTimeout-100*time.Millisecond || wait > RetryTimeout+5*time.Second {
		t.Errorf("resent after %v, want about %v", wait, RetryTimeout)
	}
	if again.req.Seq == first.req.Seq || again.req.LUID != first.req.LUID {
		t.Errorf("resend %v of %v: want a new seq", again.req, first.req)
	}
	if err := e.ctl.Resume(name); err != nil {
		t.Fatal(err)
	}
	st, err := e.ctl.Status(name, false)
	if err != nil || !strings.Contains(st, "/8 ") {
		t.Errorf("status %q %v: want 8 regions (the late reply of 2048 ignored)", st, err)
	}
	t.Logf("resent after %v", wait)
}

// ramDisk returns the "major:minor" of /dev/ramN (module brd).
func ramDisk(t *testing.T, n int) (string, uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/sys/block/ram%d/dev", n))
	if err != nil {
		t.Fatalf("RAM disk %d (module brd rd_nr=2 rd_size=4096): %v", n, err)
	}
	var major, minor uint32
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &major, &minor); err != nil {
		t.Fatalf("/sys/block/ram%d/dev %q: %v", n, b, err)
	}
	return fmt.Sprintf("%d:%d", major, minor), unix.Mkdev(major, minor)
}

func fill(b byte) []byte { return bytes.Repeat([]byte{b}, 4096) }

// TestIntegrationMirrorData: a mirror on two RAM disks with our log keeps
// data. The initial resynchronisation, driven by the log's GET_RESYNC_WORK
// answers, copies leg 0 to leg 1; a write through the mirror lands on both
// legs and reads back.
func TestIntegrationMirrorData(t *testing.T) {
	requireDMLog(t)
	testutil.RequireModule(t, "brd", "rd_nr=2 rd_size=4096")
	h := startHarness(t, &Server{}, nil)
	e := newDMEnv(t) // the zero legs go unused here
	leg0, dev0 := ramDisk(t, 0)
	leg1, dev1 := ramDisk(t, 1)
	// Before the mirror exists: data only on leg 0 in region 6, and
	// different data on leg 1.
	off6 := int64(6 * regionSize * 512)
	if _, err := dmioctl.DirectIO(e.dir, dev0, off6, true, 0x66); err != nil {
		t.Fatal(err)
	}
	if _, err := dmioctl.DirectIO(e.dir, dev1, off6, true, 0x11); err != nil {
		t.Fatal(err)
	}
	name, dev := e.createMirror()
	table := fmt.Sprintf("userspace 3 %s core %d 2 %s 0 %s 0", e.uuid(), regionSize, leg0, leg1)
	if err := e.ctl.Load(name, 0, legSectors, "mirror", table); err != nil {
		t.Fatalf("loading the mirror table: %v", err)
	}
	if err := e.ctl.Resume(name); err != nil {
		t.Fatal(err)
	}
	i := 0
	for range legSectors / regionSize {
		i, _ = h.waitFor(TypeSetRegionSync, i, 30*time.Second)
		i++
	}
	if got, err := dmioctl.DirectIO(e.dir, dev1, off6, false, 0); err != nil || !bytes.Equal(got, fill(0x66)) {
		t.Fatalf("leg 1 after the resync: %v; want leg 0's 0x66 bytes (first byte %#x)", err, first(got))
	}
	off2 := int64(2 * regionSize * 512)
	if _, err := dmioctl.DirectIO(e.dir, dev, off2, true, 0xa5); err != nil {
		t.Fatalf("writing through the mirror: %v", err)
	}
	for _, c := range []struct {
		what string
		dev  uint64
	}{{"the mirror", dev}, {"leg 0", dev0}, {"leg 1", dev1}} {
		got, err := dmioctl.DirectIO(e.dir, c.dev, off2, false, 0)
		if err != nil || !bytes.Equal(got, fill(0xa5)) {
			t.Errorf("reading %s back: %v, first byte %#x, want 4096 bytes of 0xa5", c.what, err, first(got))
		}
	}
	n := h.count()
	if err := e.removeMirror(); err != nil {
		t.Fatal(err)
	}
	h.waitFor(TypeDtr, n, time.Second)
}

func first(b []byte) byte {
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// TestIntegrationOverrun: a server whose socket overflows loses requests,
// and the kernel takes that for a missing server: the requests that found
// the queue full wait in the kernel's reconnect loop, which re-sends the
// constructor of a log the server still has. The server reports the
// overrun, rebuilds the log, and every request is answered in the end.
func TestIntegrationOverrun(t *testing.T) {
	requireDMLog(t)
	s := &Server{}
	release := make(chan struct{})
	var paused atomic.Bool
	h := startHarnessBuffer(t, s, func(h *harness, m connector.Message, r seen) bool {
		if paused.Load() && r.req.Type == TypeStatusInfo {
			paused.Store(false)
			<-release // the socket fills up meanwhile
		}
		return false
	}, 1) // the kernel's minimum receive buffer, a few requests
	e := newDMEnv(t)
	name, _ := e.loadMirror("nosync")
	if err := e.ctl.Resume(name); err != nil {
		t.Fatal(err)
	}
	kmsg := newKmsgWaiter(t)
	paused.Store(true)
	const callers = 8
	done := make(chan error, callers)
	for range callers {
		go func() {
			_, err := e.ctl.Status(name, false) // one STATUS_INFO each, at once
			done <- err
		}()
	}
	kmsg.waitFor(t, "Userspace log server not found", 10*time.Second)
	// Back to a buffer that holds a burst (what Serve sets up): with the
	// minimum one, the kernel's reconnect constructors, sent by every
	// waiting caller at the same 2 s tick, overflow it again and again.
	if err := h.c.SetReadBuffer(ReadBufferSize); err != nil {
		t.Fatal(err)
	}
	close(release)
	for range callers {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("status: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("status calls still blocked after 20 s; server %+v", s.Stats())
		}
	}
	st := s.Stats()
	if st.Overruns == 0 || st.Reconstructed == 0 || st.Logs != 1 {
		t.Errorf("server stats %+v: want an overrun reported and the log rebuilt", st)
	}
	t.Logf("server stats %+v", st)
	n := h.count()
	if err := e.removeMirror(); err != nil {
		t.Fatal(err)
	}
	h.waitFor(TypeDtr, n, time.Second)
}

// TestIntegrationIntegratedFlush: with "integrated_flush" after the uuid
// (header version 3), the kernel keeps the word out of the constructor's
// arguments and sends the marks inside FLUSH instead of as MARK_REGION.
func TestIntegrationIntegratedFlush(t *testing.T) {
	requireDMLog(t)
	h := startHarness(t, &Server{}, nil)
	e := newDMEnv(t)
	name, dev := e.createMirror()
	// Five log arguments: uuid, integrated_flush, core, size, nosync.
	table := fmt.Sprintf("userspace 5 %s integrated_flush core %d nosync 2 %s 0 %s 0", e.uuid(), regionSize, e.legs[0], e.legs[1])
	if err := e.ctl.Load(name, 0, legSectors, "mirror", table); err != nil {
		t.Fatalf("loading the mirror table: %v", err)
	}
	_, ctr := h.waitFor(TypeCtr, 0, time.Second)
	if _, args, _ := ctr.req.CtrArgs(); strings.Join(args, " ") != "core 1024 nosync" {
		t.Errorf("CTR arguments %q: want the table's without integrated_flush", args)
	}
	if err := e.ctl.Resume(name); err != nil {
		t.Fatal(err)
	}
	n := h.count()
	if _, err := dmioctl.DirectIO(e.dir, dev, 5*regionSize*512, true, 0x77); err != nil {
		t.Fatalf("writing through the mirror: %v", err)
	}
	_, fl := h.waitFor(TypeFlush, n, 5*time.Second)
	if rs, _ := fl.req.AppendRegions(nil); len(rs) != 1 || rs[0] != 5 {
		t.Errorf("FLUSH carries %v, want the mark [5]", rs)
	}
	h.mu.Lock()
	for _, s := range h.log[n:] {
		if s.req.Type == TypeMarkRegion {
			t.Errorf("MARK_REGION sent with integrated_flush: %v", s.req)
		}
	}
	h.mu.Unlock()
	if tbl, err := e.ctl.Status(name, true); err != nil || !strings.Contains(tbl, "integrated_flush") {
		t.Errorf("table %q %v: want integrated_flush", tbl, err)
	}
	n = h.count()
	if err := e.removeMirror(); err != nil {
		t.Fatal(err)
	}
	h.waitFor(TypeDtr, n, 5*time.Second)
}

// TestIntegrationNoAgent: on the running kernel, Serve fails at once with
// connector.ErrNoAgent, naming the module, where dm-log-userspace is not
// registered (the host), and Check passes where it is (the matrix).
func TestIntegrationNoAgent(t *testing.T) {
	s := &Server{SkipPrivilegeCheck: true}
	testutil.CheckAgentGate(t, connector.IDDM, "dm-log-userspace", s.Check, s.Serve)
}
