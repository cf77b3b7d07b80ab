//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/dmlog"
	"github.com/cnlink/connector/internal/cli"
	"github.com/cnlink/connector/internal/testutil"
	"golang.org/x/sys/unix"
)

const program = "dmlogd"

func TestMain(m *testing.M) {
	testutil.Main(m, map[string]testutil.HelperFunc{program: mainExit})
}

// syncBuffer is a bytes.Buffer safe for the server goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeServe is dmlogd's serve running on the fake kernel, whose
// dm-log-userspace agent collects the replies.
type fakeServe struct {
	k           *cntest.Kernel
	replies     chan connector.Message
	out, errOut syncBuffer
	cancel      context.CancelFunc
	done        chan error
}

// startFake runs serve with opts on a new fake kernel and returns once it
// receives.
func startFake(t *testing.T, opts *options) *fakeServe {
	t.Helper()
	f := &fakeServe{k: cntest.New(nil), replies: make(chan connector.Message, 16), done: make(chan error, 1)}
	f.k.Handle(connector.IDDM, func(m connector.Message, _ connector.Sender) []cntest.Reply {
		f.replies <- m
		return nil
	})
	c := testutil.Dial(t, f.k.Dial, nil)
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	t.Cleanup(cancel)
	go func() {
		f.done <- serve(ctx, opts, c, &dmlog.Server{SkipPrivilegeCheck: true}, &f.out, &f.errOut)
	}()
	if !f.k.WaitReceiving(c.PortID(), 5*time.Second) {
		t.Fatal("not serving")
	}
	return f
}

// request sends r as the kernel does (multicast on group 7) and waits for
// the reply.
func (f *fakeServe) request(t *testing.T, r dmlog.Request) {
	t.Helper()
	b, _ := dmlog.AppendRequest(nil, r)
	if _, err := f.k.Multicast(7, connector.Message{ID: connector.IDDM, Seq: r.Seq, Data: b}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.replies:
	case <-time.After(5 * time.Second):
		t.Fatalf("no reply to the request of type %v", r.Type)
	}
}

// stop ends serve and fails the test if it returned an error.
func (f *fakeServe) stop(t *testing.T) {
	t.Helper()
	f.cancel()
	if err := <-f.done; err != nil {
		t.Fatalf("serve: %v", err)
	}
}

// TestServeJSON runs dmlogd's server on the fake kernel, sends the requests
// of a mirror load and a write, and checks the -json trace.
func TestServeJSON(t *testing.T) {
	f := startFake(t, &options{json: true})
	reqs := []struct {
		typ  dmlog.RequestType
		data []byte
	}{
		{dmlog.TypeCtr, []byte("8192 core 1024")},
		{dmlog.TypeGetRegionSize, nil},
		{dmlog.TypeMarkRegion, dmlog.AppendUint64(nil, 3)},
		{dmlog.TypeFlush, nil},
		{dmlog.TypeIsClean, dmlog.AppendUint64(nil, 99)},
	}
	for i, r := range reqs {
		f.request(t, dmlog.Request{Header: dmlog.Header{UUID: "m1", LUID: 7, Version: dmlog.Version, Seq: uint32(i + 1), Type: r.typ}, Data: r.data})
	}
	f.stop(t)
	out, errOut := &f.out, &f.errOut
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	var got []traceRecord
	for sc.Scan() {
		var r traceRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got = append(got, r)
	}
	if len(got) != len(reqs) {
		t.Fatalf("%d trace lines, want %d:\n%s", len(got), len(reqs), out.String())
	}
	for i, r := range got {
		if r.Type != reqs[i].typ.String() || r.Seq != uint32(i+1) || r.UUID != "m1" || r.LUID != "0x7" || r.DataLen != len(reqs[i].data) {
			t.Errorf("line %d: %+v", i, r)
		}
	}
	// Region 99 of an 8-region log is out of range: EINVAL.
	if got[1].ReplyLen != 8 || got[4].Errno != int(syscall.EINVAL) {
		t.Errorf("GET_REGION_SIZE reply %d bytes; IS_CLEAN of region 99 errno %d, want EINVAL", got[1].ReplyLen, got[4].Errno)
	}
	if !strings.Contains(errOut.String(), "5 requests, 5 replies, 1 error,") {
		t.Errorf("summary: %q", errOut.String())
	}
}

func TestParseArgs(t *testing.T) {
	if _, err := parseArgs([]string{"-json", "-q"}, io.Discard); err == nil {
		t.Error("-json -q accepted")
	}
	if _, err := parseArgs([]string{"x"}, io.Discard); err == nil {
		t.Error("argument accepted")
	}
	if _, err := parseArgs([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
	if o, err := parseArgs([]string{"-json"}, io.Discard); err != nil || !o.json {
		t.Errorf("-json: %+v %v", o, err)
	}
	// Usage errors exit 2 and name the flag, once (the flag package prints
	// its own errors).
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-bogus"}, "-bogus"},
		{[]string{"-json", "-q"}, "-json and -q"},
		{[]string{"extra"}, `"extra"`},
	} {
		code, _, stderr := testutil.RunHelperExit(t, 10*time.Second, program, tc.args...)
		if code != 2 || strings.Count(stderr, tc.want) != 1 {
			t.Errorf("dmlogd %q: exit %d, stderr %q; want 2 and one mention of %s", tc.args, code, stderr, tc.want)
		}
	}
}

// TestStartup runs dmlogd on the running kernel and checks that it says
// "serving" only when it can serve: without CAP_SYS_ADMIN (as uid 65534,
// and as this user if it lacks it) it exits 1 naming the capability, and
// without the dm-log-userspace agent (the host) it exits 1 naming the
// module; neither prints the serving line. Where it can serve (root in the
// kernel matrix), it prints that line and exits 0 on SIGINT.
func TestStartup(t *testing.T) {
	testutil.RequireInitialNetNS(t)
	const timeout = 10 * time.Second
	refused := func(t *testing.T, p *testutil.Proc, want ...string) {
		t.Helper()
		code := p.Wait(t, timeout)
		stderr := p.Stderr.String()
		if code != 1 || strings.Contains(stderr, "serving") {
			t.Errorf("exit %d, stderr %q; want 1 and no serving line", code, stderr)
		}
		for _, w := range want {
			if !strings.Contains(stderr, w) {
				t.Errorf("stderr %q does not say %q", stderr, w)
			}
		}
	}
	t.Run("nobody", func(t *testing.T) {
		testutil.RequireRoot(t, "to run dmlogd as uid 65534")
		refused(t, testutil.Start(t, testutil.AsNobody(testutil.HelperCommand(t, program))), "CAP_SYS_ADMIN", "permission denied")
	})
	t.Run("self", func(t *testing.T) {
		admin, err := testutil.HasCapability(unix.CAP_SYS_ADMIN)
		if err != nil {
			t.Fatal(err)
		}
		agents, err := connector.Agents()
		if err != nil {
			t.Fatal(err)
		}
		p := testutil.StartHelper(t, program)
		switch {
		case !admin:
			refused(t, p, "CAP_SYS_ADMIN")
		case !slices.ContainsFunc(agents, func(a connector.Agent) bool { return a.ID == connector.IDDM }):
			refused(t, p, "modprobe dm-log-userspace")
			if s := p.Stderr.String(); strings.Contains(s, "dmlogd: dmlog") || strings.Contains(s, "dmlogd: connector") {
				t.Errorf("stderr %q: two program prefixes", s)
			}
		default:
			p.Stderr.FindPrefix(t, timeout, "dmlogd: serving")
			p.Signal(t, os.Interrupt)
			if code := p.Wait(t, timeout); code != 0 {
				t.Errorf("after SIGINT: exit %d, stderr %q", code, p.Stderr.String())
			}
		}
	})
}

// TestErrorsOnePrefix: what dmlogd reports carries one program prefix,
// dmlogd's, not the library's as well ("dmlogd: dmlog: ..."), both in the
// server's error log and in the exit message.
func TestErrorsOnePrefix(t *testing.T) {
	f := startFake(t, &options{quiet: true})
	// A request type no kernel sends: refused with EINVAL, and logged.
	f.request(t, dmlog.Request{Header: dmlog.Header{UUID: "u1", LUID: 1, Version: dmlog.Version, Seq: 17, Type: 200}})
	f.stop(t)
	log := f.errOut.String()
	if !strings.Contains(log, "dmlogd: unparsable request seq 17") || !strings.Contains(log, "answered EINVAL") {
		t.Errorf("stderr %q: want the unparsable request logged, answered EINVAL", log)
	}
	if strings.Contains(log, "dmlogd: dmlog:") {
		t.Errorf("stderr %q: two program prefixes", log)
	}
	var exit strings.Builder
	cli.Exit(&exit, "dmlogd", oneprefix(fmt.Errorf("dmlog: %w", errors.New("no agent"))))
	if got := exit.String(); got != "dmlogd: no agent\n" {
		t.Errorf("exit message %q, want %q", got, "dmlogd: no agent\n")
	}
	exit.Reset()
	cli.Exit(&exit, "dmlogd", oneprefix(errors.New("dmlog serve: no agent")))
	if got := exit.String(); got != "dmlogd: serve: no agent\n" {
		t.Errorf("exit message %q, want %q", got, "dmlogd: serve: no agent\n")
	}
}
