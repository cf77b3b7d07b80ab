//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/cli"
	"github.com/cnlink/connector/internal/testutil"
	"golang.org/x/sys/unix"
)

const (
	program = "bus" // the helper that runs as the bus program
	timeout = 20 * time.Second
)

// noCapEnv, set for the program helper, runs the program without CAP_NET_ADMIN:
// the capability is dropped on the main thread, where the program's socket
// calls run.
const noCapEnv = "BUS_TEST_NO_NET_ADMIN"

func TestMain(m *testing.M) {
	if os.Getenv(testutil.HelperEnv) == program && os.Getenv(noCapEnv) != "" {
		runtime.LockOSThread()
		if err := testutil.DropCapabilityThread(unix.CAP_NET_ADMIN); err != nil {
			fmt.Fprintln(os.Stderr, "dropping CAP_NET_ADMIN:", err)
			os.Exit(3)
		}
	}
	testutil.Main(m, map[string]testutil.HelperFunc{program: mainExit})
}

// needNetAdmin skips the test when this process may not send to ports and
// groups (no CAP_NET_ADMIN), which every bus exchange needs.
func needNetAdmin(t *testing.T) {
	t.Helper()
	a, err := connector.Dial(nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer a.Close()
	b, err := connector.Dial(nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer b.Close()
	err = a.SendTo(b.PortID(), connector.Message{ID: DefaultID, Data: []byte("probe")})
	if errors.Is(err, os.ErrPermission) {
		t.Skipf("sending to a port needs CAP_NET_ADMIN, which this test lacks: %v", err)
	}
	if err != nil {
		t.Fatalf("probe send: %v", err)
	}
}

var portRe = func(line, after string) (uint32, error) {
	i := strings.Index(line, after)
	if i < 0 {
		return 0, fmt.Errorf("no %q in %q", after, line)
	}
	f := strings.Fields(line[i+len(after):])
	if len(f) == 0 {
		return 0, fmt.Errorf("nothing after %q in %q", after, line)
	}
	n, err := strconv.ParseUint(f[0], 10, 32)
	return uint32(n), err
}

// startServer runs "bus serve" and returns it with its port.
func startServer(t *testing.T, args ...string) (*testutil.Proc, uint32) {
	t.Helper()
	p := testutil.StartHelper(t, program, append([]string{"serve"}, args...)...)
	line := p.Stderr.FindPrefix(t, timeout, "bus: serving on port ")
	port, err := portRe(line, "serving on port ")
	if err != nil {
		t.Fatal(err)
	}
	return p, port
}

// TestRequestReply runs a server and two client processes: one calls the
// server's port, the other multicasts its request on the server's group.
func TestRequestReply(t *testing.T) {
	needNetAdmin(t)
	srv, port := startServer(t, "-g", "24")

	c1 := testutil.StartHelper(t, program, "call", "-port", strconv.FormatUint(uint64(port), 10), "echo", "hello", "bus")
	if code := c1.Wait(t, timeout); code != 0 {
		t.Fatalf("call exited with %d; stderr:\n%s", code, c1.Stderr)
	}
	if got := c1.Stdout.All(); len(got) != 1 || got[0] != "hello bus" {
		t.Errorf("call printed %q, want the echoed text", got)
	}
	l := c1.Stderr.FindPrefix(t, time.Second, "bus: port ")
	callerPort, err := portRe(l, "bus: port ")
	if err != nil {
		t.Fatal(err)
	}
	if from, _ := portRe(l, " from port "); from != port {
		t.Errorf("reply came from port %d, want the server's %d: %q", from, port, l)
	}
	seq, err := portRe(l, "reply to seq ")
	if err != nil {
		t.Fatal(err)
	}
	srv.Stdout.Find(t, timeout, "the server's log of the call", func(s string) bool {
		return strings.HasSuffix(s, fmt.Sprintf("request seq %d from port %d via port: echo hello bus -> hello bus", seq, callerPort))
	})

	c2 := testutil.StartHelper(t, program, "call", "-g", "24", "ping")
	if code := c2.Wait(t, timeout); code != 0 {
		t.Fatalf("call -g exited with %d; stderr:\n%s", code, c2.Stderr)
	}
	if got := c2.Stdout.String(); got != "pong" {
		t.Errorf("call -g printed %q, want pong", got)
	}
	srv.Stdout.Find(t, timeout, "the server's log of the group call", func(s string) bool {
		return strings.HasSuffix(s, "via group 24: ping -> pong")
	})

	srv.Signal(t, syscall.SIGTERM)
	if code := srv.Wait(t, timeout); code != 0 {
		t.Fatalf("server exited with %d after SIGTERM; stderr:\n%s", code, srv.Stderr)
	}
	srv.Stderr.Find(t, time.Second, "the server's summary", func(s string) bool { return s == "bus: 2 requests answered, 0 other messages ignored" })
}

func TestErrorReply(t *testing.T) {
	needNetAdmin(t)
	_, port := startServer(t, "-c", "1")
	code, stdout, stderr := testutil.RunHelperExit(t, timeout, program, "call", "-port", fmt.Sprint(port), "frobnicate")
	if code != 1 || stdout != "" {
		t.Errorf("call of an unknown request: exit %d, stdout %q; want 1 and nothing", code, stdout)
	}
	want := fmt.Sprintf(`bus: port %d answered with an error: unknown request "frobnicate"`, port)
	if !strings.HasPrefix(stderr, want) {
		t.Errorf("stderr %q, want prefix %q", stderr, want)
	}
}

func TestPublishSubscribe(t *testing.T) {
	needNetAdmin(t)
	sub := testutil.StartHelper(t, program, "sub", "-g", "25", "-c", "2")
	sub.Stderr.FindPrefix(t, timeout, "bus: port ")
	var pubPorts []uint32
	for _, text := range []string{"first message", "second\tmessage"} {
		p := testutil.StartHelper(t, program, "pub", "-g", "25", text)
		if code := p.Wait(t, timeout); code != 0 {
			t.Fatalf("pub exited with %d; stderr:\n%s", code, p.Stderr)
		}
		port, err := portRe(p.Stderr.String(), "bus: port ")
		if err != nil {
			t.Fatal(err)
		}
		pubPorts = append(pubPorts, port)
	}
	if code := sub.Wait(t, timeout); code != 0 {
		t.Fatalf("sub exited with %d; stderr:\n%s", code, sub.Stderr)
	}
	got := sub.Stdout.All()
	want := []string{
		fmt.Sprintf("port %d on group 25: first message", pubPorts[0]),
		fmt.Sprintf(`port %d on group 25: "second\tmessage"`, pubPorts[1]),
	}
	if len(got) != len(want) {
		t.Fatalf("sub printed\n%s\nwant %d lines", sub.Stdout, len(want))
	}
	for i := range want {
		if !strings.HasSuffix(got[i], want[i]) {
			t.Errorf("line %d: got %q, want suffix %q", i, got[i], want[i])
		}
	}
}

// TestCallCorrelation acts as the server itself: it checks the request on
// the wire, answers first with replies that must be ignored (wrong ack,
// wrong seq, a publish) and then with the right one.
func TestCallCorrelation(t *testing.T) {
	needNetAdmin(t)
	srv, err := connector.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	call := testutil.StartHelper(t, program, "call", "-port", fmt.Sprint(srv.PortID()), "-timeout", "15s", "ping")

	if err := srv.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatal(err)
	}
	msgs, from, err := srv.Receive()
	if err != nil {
		t.Fatalf("waiting for the request: %v", err)
	}
	if len(msgs) != 1 {
		t.Fatalf("got %d messages in the request datagram", len(msgs))
	}
	req := msgs[0]
	if req.ID != DefaultID || req.Flags != KindRequest || string(req.Data) != "ping" || from.Group != 0 {
		t.Fatalf("request %+v from %v: want id %v, kind %d, body ping, by unicast", req, from, DefaultID, KindRequest)
	}
	reply := func(seq, ack uint32, kind uint16, body string) {
		t.Helper()
		if err := srv.SendTo(from.Port, connector.Message{ID: DefaultID, Seq: seq, Ack: ack, Flags: kind, Data: []byte(body)}); err != nil {
			t.Fatalf("reply: %v", err)
		}
	}
	reply(req.Seq, req.Ack, KindReply, "wrong ack")
	reply(req.Seq+1, req.Ack+1, KindReply, "wrong seq")
	reply(req.Seq, req.Ack+1, KindPublish, "wrong kind")
	if err := srv.SendTo(from.Port, connector.Message{ID: connector.CBID{Idx: 0x99, Val: 1}, Seq: req.Seq, Ack: req.Ack + 1, Flags: KindReply, Data: []byte("wrong id")}); err != nil {
		t.Fatal(err)
	}
	reply(req.Seq, req.Ack+1, KindReply, "right")
	if code := call.Wait(t, timeout); code != 0 {
		t.Fatalf("call exited with %d; stderr:\n%s", code, call.Stderr)
	}
	if got := call.Stdout.String(); got != "right" {
		t.Errorf("call printed %q, want only the matching reply", got)
	}
}

func TestCallTimesOut(t *testing.T) {
	needNetAdmin(t)
	silent, err := connector.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	code, stdout, stderr := testutil.RunHelperExit(t, timeout, program, "call", "-port", fmt.Sprint(silent.PortID()), "-timeout", "300ms", "ping")
	if code != 1 || stdout != "" {
		t.Errorf("call to a silent port: exit %d, stdout %q; want 1 and nothing", code, stdout)
	}
	want := fmt.Sprintf("bus: request to port %d: no reply within 300ms", silent.PortID())
	if !strings.HasPrefix(stderr, want) {
		t.Errorf("stderr %q, want prefix %q", stderr, want)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("call gave up after %v, before its 300ms timeout", d)
	}
	// The request did arrive.
	_ = silent.SetReadDeadline(time.Now().Add(timeout))
	msgs, _, err := silent.Receive()
	if err != nil || len(msgs) != 1 || string(msgs[0].Data) != "ping" {
		t.Errorf("the silent peer got %v, %v; want the ping request", msgs, err)
	}
}

func TestCallUnknownPort(t *testing.T) {
	needNetAdmin(t)
	c, err := connector.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	port := c.PortID()
	c.Close() // now nobody has this port
	code, _, stderr := testutil.RunHelperExit(t, timeout, program, "call", "-port", fmt.Sprint(port), "ping")
	if code != 1 || !strings.Contains(stderr, fmt.Sprintf("no socket has port id %d", port)) {
		t.Errorf("call to a closed port: exit %d, stderr %q", code, stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	// Each usage error names what was wrong: the flag, where a flag was.
	for _, tc := range []struct {
		args []string
		want []string // what the message must name
	}{
		{[]string{}, []string{"missing command"}},
		{[]string{"frob"}, []string{"unknown command", `"frob"`}},
		{[]string{"call", "-port", "0", "ping"}, []string{"-port 0", "kernel"}},
		{[]string{"sub"}, []string{"-g GROUP"}},
		{[]string{"sub", "-g", "25", "extra"}, []string{"no arguments"}},
		{[]string{"pub", "hello"}, []string{"-g GROUP"}},
		{[]string{"pub", "-g", "20"}, []string{"text to publish"}},
		{[]string{"pub", "-g", "33", "hello"}, []string{"-g", "33"}},
		{[]string{"sub", "-g", "4294967297"}, []string{"-g", "4294967297"}}, // not group 1 (on 386 the flag package refuses it)
		{[]string{"call", "ping"}, []string{"-port PORT and -g GROUP"}},
		{[]string{"call", "-port", "5", "-g", "20", "ping"}, []string{"-port PORT and -g GROUP"}},
		{[]string{"call", "-port", "5"}, []string{"request text"}},
		{[]string{"call", "-port", "99999999999", "ping"}, []string{"-port", "99999999999"}},
		{[]string{"call", "-port", "5", "-timeout", "0s", "ping"}, []string{"-timeout"}},
		{[]string{"serve", "-id", "1:1"}, []string{"-id"}},
		{[]string{"serve", "-id", "zz"}, []string{"-id", "zz"}},
		{[]string{"serve", "extra"}, []string{"no arguments"}},
		{[]string{"sub", "-g", "20", "-c", "-2"}, []string{"-c"}},
		{[]string{"sub", "-bogus"}, []string{"-bogus"}},
	} {
		err := run(context.Background(), tc.args, io.Discard, io.Discard)
		if !errors.As(err, new(cli.UsageError)) {
			t.Errorf("run(%q) = %v, want a usage error", tc.args, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("run(%q) = %v, want a usage error naming %q", tc.args, err, w)
			}
		}
	}
	// The flag package prints its own errors; the program does not repeat
	// them.
	code, _, stderr := testutil.RunHelperExit(t, timeout, program, "sub", "-bogus")
	if n := strings.Count(stderr, "-bogus"); code != 2 || n != 1 {
		t.Errorf("bus sub -bogus: exit %d, %d mentions of -bogus in %q; want 2 and 1", code, n, stderr)
	}
	// An unknown command: one line naming it, not the usage first.
	code, _, stderr = testutil.RunHelperExit(t, timeout, program, "bogus")
	if code != 2 || !strings.HasPrefix(stderr, `bus: unknown command "bogus"`) || strings.Contains(strings.TrimSpace(stderr), "\n") {
		t.Errorf("bus bogus: exit %d, stderr %q; want 2 and one line naming bogus", code, stderr)
	}
	code, _, stderr = testutil.RunHelperExit(t, timeout, program, "call", "ping")
	if code != 2 || !strings.Contains(stderr, "call needs exactly one of -port PORT and -g GROUP") {
		t.Errorf("bus call ping: exit %d, stderr %q", code, stderr)
	}
}

func TestAnswer(t *testing.T) {
	for req, want := range map[string]string{"ping": "pong", "echo a b": "a b", "echo": "", "pid": strconv.Itoa(os.Getpid())} {
		got, err := answer(req)
		if err != nil || string(got) != want {
			t.Errorf("answer(%q) = %q, %v; want %q", req, got, err, want)
		}
	}
	if got, err := answer("time"); err != nil {
		t.Errorf("answer(time): %v", err)
	} else if _, err := time.Parse(time.RFC3339Nano, string(got)); err != nil {
		t.Errorf("answer(time) = %q: %v", got, err)
	}
	if _, err := answer("nope"); err == nil {
		t.Error("answer(nope) succeeded")
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{"plain text": "plain text", "tab\there": `"tab\there"`, "\xff": `"\xff"`, "": ""} {
		if got := printable([]byte(in)); got != want {
			t.Errorf("printable(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestServeWithoutNetAdmin checks that a server that could not send its
// replies fails at start, saying why, instead of logging answers that never
// leave and exiting 0.
func TestServeWithoutNetAdmin(t *testing.T) {
	testutil.RequireInitialNetNS(t)
	cmd := testutil.HelperCommand(t, program, "serve", "-c", "1")
	cmd.Env = append(cmd.Env, noCapEnv+"=1")
	p := testutil.Start(t, cmd)
	if code := p.Wait(t, timeout); code != 1 {
		t.Fatalf("serve without CAP_NET_ADMIN exited with %d, want 1; stderr:\n%s", code, p.Stderr)
	}
	stderr := p.Stderr.String()
	if !strings.HasPrefix(stderr, "bus: cannot answer requests: ") || !strings.Contains(stderr, "CAP_NET_ADMIN") || strings.Contains(stderr, "serving on port") {
		t.Errorf("stderr %q: want the capability error before serving starts", stderr)
	}
	if out := p.Stdout.String(); out != "" {
		t.Errorf("stdout %q, want nothing", out)
	}
}

// TestHelpPerCommand checks that each command's -h lists its own flags
// only, on stderr, and exits 0.
func TestHelpPerCommand(t *testing.T) {
	for cmd, flags := range map[string][]string{
		"sub":   {"-g", "-c", "-id"},
		"pub":   {"-g", "-id"},
		"serve": {"-g", "-c", "-id"},
		"call":  {"-port", "-g", "-timeout", "-id"},
	} {
		var stdout, stderr strings.Builder
		err := run(context.Background(), []string{cmd, "-h"}, &stdout, &stderr)
		if !errors.Is(err, flag.ErrHelp) || stdout.Len() != 0 {
			t.Errorf("%s -h: %v, stdout %q; want flag.ErrHelp and nothing on stdout", cmd, err, stdout.String())
		}
		help := stderr.String()
		if !strings.HasPrefix(help, "usage: bus "+cmd) {
			t.Errorf("%s -h: help %q does not start with its usage line", cmd, help)
		}
		for _, f := range []string{"-port", "-timeout", "-c", "-g", "-id"} {
			listed := strings.Contains(help, "\n  "+f+" ")
			if want := slices.Contains(flags, f); listed != want {
				t.Errorf("%s -h lists %s: %v, want %v; help:\n%s", cmd, f, listed, want, help)
			}
		}
	}
	code, stdout, stderr := testutil.RunHelperExit(t, timeout, program, "-h")
	if code != 0 || stdout != "" || !strings.HasPrefix(stderr, "usage:") {
		t.Errorf("bus -h: exit %d, stdout %q, stderr %q; want 0 and the usage on stderr", code, stdout, stderr)
	}
}

// TestUnprivileged runs each command as uid 65534, where the kernel decides
// what works, and checks what the documentation says: pub, call and serve
// send to userspace ports or groups and need CAP_NET_ADMIN on every kernel;
// sub only joins its group, which from Linux 6.6 on anyone may do for an
// odd-numbered group (the cn_bind quirk), and which needs CAP_NET_ADMIN for
// an even group, and for every group before 6.6.
func TestUnprivileged(t *testing.T) {
	testutil.RequireInitialNetNS(t)
	testutil.RequireRoot(t, "to switch its helpers to uid 65534")
	needNetAdmin(t) // the test publishes to the unprivileged subscriber
	major, minor := testutil.KernelVersion(t)
	modern := major > 6 || major == 6 && minor >= 6
	nobody := func(args ...string) *testutil.Proc {
		return testutil.Start(t, testutil.AsNobody(testutil.HelperCommand(t, program, args...)))
	}
	// refused checks that a command fails at once with exit status 1 and
	// an error that names the capability.
	refused := func(args ...string) {
		t.Helper()
		p := nobody(args...)
		code := p.Wait(t, timeout)
		if stderr := p.Stderr.String(); code != 1 || !strings.Contains(stderr, "CAP_NET_ADMIN") || !strings.Contains(stderr, "operation not permitted") {
			t.Errorf("kernel %d.%d, uid 65534: bus %s exited with %d, stderr %q; want 1 and the CAP_NET_ADMIN error", major, minor, strings.Join(args, " "), code, stderr)
		}
	}
	for _, args := range [][]string{
		{"pub", "-g", "29", "hello"},
		{"call", "-g", "29", "ping"},
		{"call", "-port", "1", "ping"},
		{"serve"},
		{"serve", "-g", "29"},
		{"sub", "-g", "30", "-c", "1"},
	} {
		refused(args...)
	}
	if !modern {
		refused("sub", "-g", "29", "-c", "1")
		return
	}
	sub := nobody("sub", "-g", "29", "-c", "1")
	sub.Stderr.FindPrefix(t, timeout, "bus: port ")
	c, err := connector.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Multicast(29, connector.Message{ID: DefaultID, Flags: KindPublish, Data: []byte("to nobody")}); err != nil {
		t.Fatal(err)
	}
	if code := sub.Wait(t, timeout); code != 0 {
		t.Fatalf("kernel %d.%d, uid 65534: bus sub -g 29 exited with %d; stderr:\n%s", major, minor, code, sub.Stderr)
	}
	want := fmt.Sprintf("port %d on group 29: to nobody", c.PortID())
	if got := sub.Stdout.All(); len(got) != 1 || !strings.HasSuffix(got[0], want) {
		t.Errorf("kernel %d.%d, uid 65534: bus sub -g 29 printed %q, want one line ending %q", major, minor, got, want)
	}
}
