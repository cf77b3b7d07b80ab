package dmlog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/testutil"
)

// TestServerLifeCycle runs the request sequence the kernel sends for a
// mirror (measured on all four matrix kernels): load, resume, one write,
// suspend, remove; against the default in-memory log.
func TestServerLifeCycle(t *testing.T) {
	f := newFakeDM(t)
	var traced []Trace
	s := &Server{SkipPrivilegeCheck: true, Trace: func(tr Trace) { traced = append(traced, tr) }}
	_, stop := f.serve(s)

	// 8192 sectors in regions of 1024: 8 regions.
	if d := f.ok(TypeCtr, []byte("8192 core 1024")); len(d) != 0 {
		t.Errorf("CTR reply data %q, want none", d)
	}
	if v := f.u64(TypeGetRegionSize, nil); v != 1024 {
		t.Errorf("region size %d", v)
	}
	if v := f.u64(TypeGetSyncCount, nil); v != 0 {
		t.Errorf("sync count %d, want 0 (a new core log resynchronises)", v)
	}
	f.ok(TypeResume, nil)
	found, r := f.pair(TypeGetResyncWork, nil)
	if !found || r != 0 {
		t.Errorf("resync work %v %d, want region 0", found, r)
	}
	if rec, hint := f.pair(TypeIsRemoteRecovering, u64s(0)); rec || hint != 0 {
		t.Errorf("remote recovering %v hint %d", rec, hint)
	}
	f.ok(TypeSetRegionSync, AppendRegionSync(nil, 0, true))
	if v := f.u64(TypeInSync, u64s(0)); v != 1 {
		t.Errorf("region 0 in sync = %d", v)
	}
	if v := f.u64(TypeInSync, u64s(1)); v != 0 {
		t.Errorf("region 1 in sync = %d", v)
	}
	if rec, hint := f.pair(TypeIsRemoteRecovering, u64s(3)); rec || hint != 1 {
		t.Errorf("remote recovering %v hint %d, want hint 1", rec, hint)
	}
	// One write to region 2.
	f.ok(TypeMarkRegion, u64s(2))
	f.ok(TypeFlush, nil)
	if v := f.u64(TypeIsClean, u64s(2)); v != 0 {
		t.Errorf("marked region clean = %d", v)
	}
	f.ok(TypeClearRegion, u64s(2))
	f.ok(TypeFlush, nil)
	if v := f.u64(TypeIsClean, u64s(2)); v != 1 {
		t.Errorf("cleared region clean = %d", v)
	}
	if st := string(f.ok(TypeStatusInfo, nil)); st != "1 memlog\x00" {
		t.Errorf("status %q", st)
	}
	if v := f.u64(TypeGetSyncCount, nil); v != 1 {
		t.Errorf("sync count %d", v)
	}
	l, ok := s.Log(f.uuid, f.luid)
	if !ok {
		t.Fatal("log not held")
	}
	ms := l.(*MemLog).Stats()
	if ms.Marks != 1 || ms.Clears != 1 || ms.Flushes != 2 || ms.Regions != 8 || ms.Dirty != 0 || ms.InSync != 1 {
		t.Errorf("MemLog stats %+v", ms)
	}
	f.ok(TypePresuspend, nil)
	f.ok(TypePostsuspend, nil)
	if !l.(*MemLog).Stats().Suspended {
		t.Error("not suspended")
	}
	f.ok(TypeDtr, nil)
	if _, ok := s.Log(f.uuid, f.luid); ok {
		t.Error("log still held after DTR")
	}
	stop() // Trace runs after the reply went out: wait for the last one
	st := s.Stats()
	if st.Requests != 21 || st.Replies != 21 || st.Errors != 0 || st.Logs != 0 {
		t.Errorf("stats %+v", st)
	}
	if len(traced) != 21 || traced[0].Request.Type != TypeCtr || traced[20].Request.Type != TypeDtr {
		t.Errorf("%d traces", len(traced))
	}
}

// TestServerDuplicates sends what the kernel sends after a 15 s timeout:
// the same request again under a new seq. The log's state must be as if
// it came once.
func TestServerDuplicates(t *testing.T) {
	f := newFakeDM(t)
	s := &Server{SkipPrivilegeCheck: true}
	f.serve(s)
	f.ok(TypeCtr, []byte("8192 core 1024"))
	f.ok(TypeResume, nil)
	_, r1 := f.pair(TypeGetResyncWork, nil)
	_, r2 := f.pair(TypeGetResyncWork, nil) // the reply to the first was lost
	if r1 != r2 {
		t.Errorf("repeated GET_RESYNC_WORK: region %d then %d", r1, r2)
	}
	f.ok(TypeSetRegionSync, AppendRegionSync(nil, r1, true))
	f.ok(TypeSetRegionSync, AppendRegionSync(nil, r1, true))
	if v := f.u64(TypeGetSyncCount, nil); v != 1 {
		t.Errorf("sync count after a repeated SET_REGION_SYNC: %d, want 1", v)
	}
	if _, r3 := f.pair(TypeGetResyncWork, nil); r3 != r1+1 {
		t.Errorf("next resync work %d, want %d", r3, r1+1)
	}
	for range 2 {
		f.ok(TypeMarkRegion, u64s(4, 5))
		f.ok(TypeFlush, nil)
	}
	for range 2 {
		f.ok(TypeClearRegion, u64s(4))
	}
	l, _ := s.Log(f.uuid, f.luid)
	if d := l.(*MemLog).Stats().Dirty; d != 1 {
		t.Errorf("%d dirty regions, want 1 (region 5)", d)
	}
	f.ok(TypeDtr, nil)
	f.ok(TypeDtr, nil) // a repeated DTR succeeds too
}

// TestServerReconstruct: a CTR for a log the server holds (the kernel took
// it for gone) rebuilds the log instead of failing.
func TestServerReconstruct(t *testing.T) {
	f := newFakeDM(t)
	var ctrs []Ctr
	s := &Server{SkipPrivilegeCheck: true, New: func(c Ctr) (Log, string, error) {
		ctrs = append(ctrs, c)
		l, err := NewCoreLog(c.Sectors, c.Args)
		return l, "", err
	}}
	f.serve(s)
	f.ok(TypeCtr, []byte("8192 core 1024 nosync"))
	f.ok(TypeMarkRegion, u64s(1))
	f.ok(TypeCtr, []byte("8192 core 1024 nosync\x00")) // the kernel's re-sent form
	f.ok(TypeResume, nil)
	if len(ctrs) != 2 || ctrs[0].Again || !ctrs[1].Again || ctrs[0].Resent || !ctrs[1].Resent || ctrs[1].Sectors != 8192 || strings.Join(ctrs[1].Args, " ") != "core 1024 nosync" {
		t.Fatalf("constructors %+v", ctrs)
	}
	if v := f.u64(TypeIsClean, u64s(1)); v != 1 {
		t.Errorf("region 1 clean = %d after the rebuild, want 1 (a new log)", v)
	}
	if v := f.u64(TypeGetSyncCount, nil); v != 8 {
		t.Errorf("nosync log from New: sync count %d", v)
	}
	if st := s.Stats(); st.Reconstructed != 1 || st.Logs != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestServerResentCtr: the default MemLog of a constructor the kernel
// re-sent (trailing NUL), or of a log rebuilt, starts out of sync even with
// nosync: writes may have happened that no log kept.
func TestServerResentCtr(t *testing.T) {
	f := newFakeDM(t)
	f.serve(&Server{SkipPrivilegeCheck: true})
	f.ok(TypeCtr, []byte("8192 core 1024 nosync"))
	if v := f.u64(TypeGetSyncCount, nil); v != 8 {
		t.Errorf("first load, nosync: sync count %d, want 8", v)
	}
	f.ok(TypeCtr, []byte("8192 core 1024 nosync")) // again, without NUL
	if v := f.u64(TypeGetSyncCount, nil); v != 0 {
		t.Errorf("rebuilt: sync count %d, want 0", v)
	}
	f.uuid = "other"
	f.ok(TypeCtr, []byte("8192 core 1024 nosync\x00")) // new to this server, re-sent by the kernel
	if v := f.u64(TypeGetSyncCount, nil); v != 0 {
		t.Errorf("re-sent constructor: sync count %d, want 0", v)
	}
	if r, ok := f.pair(TypeGetResyncWork, nil); !r || ok != 0 {
		t.Errorf("resync work %v %d, want region 0", r, ok)
	}
}

// TestServerUnknownLog: a request for a log the server never constructed
// (the server restarted) gets ESRCH, which makes the kernel re-send the
// constructor.
func TestServerUnknownLog(t *testing.T) {
	f := newFakeDM(t)
	s := &Server{SkipPrivilegeCheck: true}
	f.serve(s)
	r := f.call(TypeGetSyncCount, nil)
	if r.Errno() != syscall.ESRCH || len(r.Data) != 0 {
		t.Errorf("errno %v data %d, want ESRCH", r.Errno(), len(r.Data))
	}
	if st := s.Stats(); st.UnknownLog != 1 || st.Errors != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestServerUnparsable: what the server cannot parse gets a len-0 EAGAIN
// ack on the cn_msg seq (the kernel then resends at once); a well-formed
// header of an unknown type gets EINVAL, which ends the request.
func TestServerUnparsable(t *testing.T) {
	f := newFakeDM(t)
	var reported []error
	s := &Server{SkipPrivilegeCheck: true, ErrorLog: func(err error) { reported = append(reported, err) }}
	_, stop := f.serve(s)
	for _, c := range []struct {
		name string
		data []byte
		want syscall.Errno
	}{
		{"short", []byte("garbage"), syscall.EAGAIN},
		{"cut data", kernelBytes(TypeIsClean, 1, u64s(1))[:HeaderLen+4], syscall.EAGAIN},
		{"bad size", kernelBytes(TypeIsClean, 1, u64s(1, 2)), syscall.EAGAIN},
		{"type 0", kernelBytes(0, 1, nil), syscall.EINVAL},
		{"type 99", kernelBytes(99, 1, nil), syscall.EINVAL},
	} {
		if _, err := f.k.Multicast(7, connector.Message{ID: connector.IDDM, Seq: 4242, Data: c.data}); err != nil {
			t.Fatal(err)
		}
		m := f.next()
		if len(m.Data) != 0 || m.Seq != 4242 || syscall.Errno(m.Ack) != c.want {
			t.Errorf("%s: reply seq %d ack %d len %d, want an ack with %v", c.name, m.Seq, m.Ack, len(m.Data), c.want)
		}
	}
	stop()
	if st := s.Stats(); st.Unparsable != 5 || len(reported) != 5 {
		t.Fatalf("stats %+v, %d reported", st, len(reported))
	}
	// The log says what was sent.
	for i, want := range []string{"EAGAIN", "EAGAIN", "EAGAIN", "EINVAL", "EINVAL"} {
		if msg := reported[i].Error(); !strings.Contains(msg, "answered "+want+":") {
			t.Errorf("case %d logged %q, want it to say answered %s", i, msg, want)
		}
	}
}

// errLog fails every call that can fail.
type errLog struct{ *MemLog }

func (errLog) Flush() error { return syscall.EROFS }
func (errLog) Mark([]uint64) error {
	return errors.New("backing store unreachable")
}

func TestServerLogErrors(t *testing.T) {
	f := newFakeDM(t)
	s := &Server{SkipPrivilegeCheck: true, New: func(c Ctr) (Log, string, error) {
		if c.Args[0] == "fail" {
			return nil, "", syscall.ENOMEM
		}
		if c.Args[0] == "bad" {
			return nil, "", fmt.Errorf("no such log type %q", c.Args[0])
		}
		ml, err := NewMemLog(1024, 8, false)
		return errLog{ml}, "253:7", err
	}}
	f.serve(s)
	if r := f.call(TypeCtr, []byte("8192 fail")); r.Errno() != syscall.ENOMEM {
		t.Errorf("CTR: %v, want ENOMEM", r.Errno())
	}
	if r := f.call(TypeCtr, []byte("8192 bad")); r.Errno() != syscall.EINVAL {
		t.Errorf("CTR: %v, want EINVAL", r.Errno())
	}
	if r := f.call(TypeCtr, []byte("not-a-number")); r.Errno() != syscall.EINVAL {
		t.Errorf("CTR: %v, want EINVAL", r.Errno())
	}
	if d := f.ok(TypeCtr, []byte("8192 ok")); string(d) != "253:7\x00" {
		t.Errorf("device %q", d)
	}
	if r := f.call(TypeFlush, nil); r.Errno() != syscall.EROFS {
		t.Errorf("FLUSH: %v, want EROFS", r.Errno())
	}
	if r := f.call(TypeMarkRegion, u64s(1)); r.Errno() != syscall.EIO {
		t.Errorf("MARK: %v, want EIO", r.Errno())
	}
}

// TestServerOverrun: an overrun (the kernel dropped requests: to it, the
// server was missing) is reported and serving goes on.
func TestServerOverrun(t *testing.T) {
	f := newFakeDM(t)
	errs := make(chan error, 4)
	s := &Server{SkipPrivilegeCheck: true, ErrorLog: func(err error) { errs <- err }}
	c, stop := f.serve(s)
	f.ok(TypeCtr, []byte("8192 core 1024"))
	if err := f.k.Overrun(c.PortID()); err != nil {
		t.Fatal(err)
	}
	// The overrun is reported, and serving goes on.
	if err := <-errs; !errors.Is(err, connector.ErrOverrun) {
		t.Errorf("reported %v, want an overrun", err)
	}
	// The kernel lost its request (to it: no server) and re-sends the
	// constructor, which rebuilds the log.
	f.ok(TypeCtr, []byte("8192 core 1024\x00"))
	if v := f.u64(TypeGetRegionSize, nil); v != 1024 {
		t.Errorf("region size %d", v)
	}
	if st := s.Stats(); st.Overruns != 1 || st.Reconstructed != 1 {
		t.Errorf("stats %+v", st)
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Serve returned %v, want context.Canceled", err)
	}
}

// TestServerIgnoresUserspace: only the kernel's requests are answered.
func TestServerIgnoresUserspace(t *testing.T) {
	s := &Server{SkipPrivilegeCheck: true}
	sent := 0
	send := func(connector.Message) error { sent++; return nil }
	m := connector.Message{ID: connector.IDDM, Seq: 1, Data: kernelBytes(TypeCtr, 1, []byte("8192 core 1024"))}
	s.handle(m, connector.Sender{Port: 1234, Group: 7}, send)
	if sent != 0 || s.Stats().Foreign != 1 || s.Stats().Logs != 0 {
		t.Errorf("a userspace sender's request was served: sent %d, %+v", sent, s.Stats())
	}
	s.handle(m, connector.Sender{Group: 7}, send)
	if sent != 1 || s.Stats().Logs != 1 {
		t.Errorf("the kernel's request was not served: sent %d, %+v", sent, s.Stats())
	}
}

// TestPrivilegeCheck: Serve refuses to run without CAP_SYS_ADMIN, whose
// absence the kernel would answer only with silence. The expected result
// comes from /proc/self/status.
func TestPrivilegeCheck(t *testing.T) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status on this system:", err)
	}
	var eff uint64
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			eff, _ = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	has := eff&(1<<21) != 0 // CAP_SYS_ADMIN
	f := newFakeDM(t)
	c, err := f.k.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = (&Server{}).Serve(ctx, c)
	if has {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("with CAP_SYS_ADMIN: %v, want context.Canceled", err)
		}
		return
	}
	if !errors.Is(err, ErrNoSysAdmin) || !errors.Is(err, os.ErrPermission) || !strings.HasPrefix(err.Error(), "dmlog: serve: the process lacks CAP_SYS_ADMIN") {
		t.Errorf("without CAP_SYS_ADMIN: %v, want ErrNoSysAdmin and os.ErrPermission, reading dmlog: serve: the process lacks CAP_SYS_ADMIN", err)
	}
	testutil.CheckErrorShape(t, "Serve without CAP_SYS_ADMIN", err, "dmlog")
	err = (&Server{}).Check(c)
	testutil.CheckErrorShape(t, "Check without CAP_SYS_ADMIN", err, "dmlog")
	if !strings.HasPrefix(fmt.Sprint(err), "dmlog: check: ") {
		t.Errorf("Check without CAP_SYS_ADMIN: %v, want dmlog: check: ...", err)
	}
}

// TestCheckServeErrorTexts: Check's and Serve's errors have the one
// "dmlog: op: detail" shape, with their own operation and no connector:
// prefix: no agent, a closed Conn.
func TestCheckServeErrorTexts(t *testing.T) {
	s := &Server{SkipPrivilegeCheck: true}
	closed, err := newFakeDM(t).k.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	testutil.CheckServeErrors(t, "dmlog", 7, closed, s.Check, s.Serve)
}

// benchRequests are a write's requests, as the kernel sends them for one
// mirror.
func benchRequests(tb testing.TB) []connector.Message {
	var ms []connector.Message
	for i, r := range []struct {
		typ  RequestType
		data []byte
	}{
		{TypeMarkRegion, u64s(2)}, {TypeFlush, nil}, {TypeIsClean, u64s(2)},
		{TypeClearRegion, u64s(2)}, {TypeFlush, nil}, {TypeInSync, u64s(5)},
	} {
		ms = append(ms, connector.Message{ID: connector.IDDM, Seq: uint32(i), Data: kernelBytes(r.typ, uint32(i), r.data)})
	}
	return ms
}

// TestServerAllocs: answering a mirror's requests allocates nothing once
// the log exists.
func TestServerAllocs(t *testing.T) {
	s := &Server{}
	send := func(connector.Message) error { return nil }
	s.handle(connector.Message{ID: connector.IDDM, Data: kernelBytes(TypeCtr, 1, []byte("8192 core 1024"))}, connector.Sender{}, send)
	ms := benchRequests(t)
	for _, m := range ms {
		s.handle(m, connector.Sender{}, send) // warm the buffers
	}
	if n := testing.AllocsPerRun(100, func() {
		for _, m := range ms {
			s.handle(m, connector.Sender{}, send)
		}
	}); n != 0 {
		t.Errorf("%v allocations for %d requests, want 0", n, len(ms))
	}
	if st := s.Stats(); st.Errors != 0 {
		t.Errorf("stats %+v", st)
	}
}

// BenchmarkServerRequest measures the server's side of one request (parse,
// log call, reply encoding), without the socket.
func BenchmarkServerRequest(b *testing.B) {
	s := &Server{}
	send := func(connector.Message) error { return nil }
	s.handle(connector.Message{ID: connector.IDDM, Data: kernelBytes(TypeCtr, 1, []byte("8192 core 1024"))}, connector.Sender{}, send)
	ms := benchRequests(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		s.handle(ms[i%len(ms)], connector.Sender{}, send)
	}
}

// TestNoAgent: on a kernel without the dm-log-userspace agent (a fake with
// no handler for 7:1) Serve fails at once with connector.ErrNoAgent and
// says which module to load, instead of waiting for requests that never
// come; Check says the same. With the agent, Check passes.
func TestNoAgent(t *testing.T) {
	s := &Server{SkipPrivilegeCheck: true}
	testutil.CheckAgentGateFake(t, connector.IDDM, "dm-log-userspace", s.Check, s.Serve)
}
