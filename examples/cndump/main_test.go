//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/cli"
	"github.com/cnlink/connector/internal/testutil"
)

const (
	program = "cndump" // the helper that runs as cndump
	exit7   = "exit7"  // the helper that exits with status 7 at once
	timeout = 20 * time.Second
)

func TestMain(m *testing.M) {
	testutil.Main(m, map[string]testutil.HelperFunc{
		program: mainExit,
		exit7:   func([]string) int { return 7 },
	})
}

// dialSender opens a socket to send test traffic from, skipping the test
// where sending to groups and ports is not allowed.
func dialSender(t *testing.T) *connector.Conn {
	t.Helper()
	c, err := connector.Dial(nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func multicast(t *testing.T, c *connector.Conn, g connector.Group, m connector.Message) {
	t.Helper()
	if err := c.Multicast(g, m); err != nil {
		if errors.Is(err, os.ErrPermission) {
			t.Skipf("multicast needs CAP_NET_ADMIN, which this test lacks: %v", err)
		}
		t.Fatalf("multicast: %v", err)
	}
}

// startDump runs cndump and waits until it has joined its groups. It skips
// the test if this process may not join those groups (cndump, its child, has
// the same privileges): even groups, and on kernels before 6.6 every group,
// need CAP_NET_ADMIN.
func startDump(t *testing.T, args ...string) (*testutil.Proc, uint32) {
	t.Helper()
	o, err := parseArgs(args, io.Discard)
	if err != nil {
		t.Fatalf("cndump %q: %v", args, err)
	}
	probe, err := connector.Dial(&connector.Config{Groups: o.groups})
	if errors.Is(err, os.ErrPermission) {
		t.Skipf("joining groups %s needs CAP_NET_ADMIN, which this test lacks: %v", formatGroups(o.groups), err)
	}
	if err != nil {
		t.Fatalf("dial with groups %s: %v", formatGroups(o.groups), err)
	}
	probe.Close()
	p := testutil.StartHelper(t, program, args...)
	line := p.Stderr.FindPrefix(t, timeout, "cndump: port ")
	f := strings.Fields(line)
	port, err := strconv.ParseUint(strings.TrimSuffix(f[2], ","), 10, 32)
	if err != nil {
		t.Fatalf("parsing the port from %q: %v", line, err)
	}
	return p, uint32(port)
}

func TestDumpPrintsMulticastMessage(t *testing.T) {
	tx := dialSender(t)
	p, _ := startDump(t, "-g", "21", "-c", "1")
	multicast(t, tx, 21, connector.Message{
		ID: connector.CBID{Idx: 0x99, Val: 7}, Seq: 42, Ack: 7, Flags: 5,
		Data: []byte("hello cndump, a payload longer than sixteen bytes"),
	})
	if code := p.Wait(t, timeout); code != 0 {
		t.Fatalf("cndump exited with %d; stderr:\n%s", code, p.Stderr)
	}
	out := p.Stdout.All()
	if len(out) != 1+4 {
		t.Fatalf("want a header line and 4 hex lines (49 bytes), got:\n%s", p.Stdout)
	}
	wantHead := fmt.Sprintf("from port %d on group 21: id 153:7 seq 42 ack 7 len 49 flags 0x0005", tx.PortID())
	if !strings.HasSuffix(out[0], wantHead) {
		t.Errorf("header line\n got %q\nwant suffix %q", out[0], wantHead)
	}
	if _, err := time.Parse("15:04:05.000000", strings.Fields(out[0])[0]); err != nil {
		t.Errorf("header line does not start with a time: %q", out[0])
	}
	wantHex := []string{
		"  0000  68 65 6c 6c 6f 20 63 6e  64 75 6d 70 2c 20 61 20  |hello cndump, a |",
		"  0010  70 61 79 6c 6f 61 64 20  6c 6f 6e 67 65 72 20 74  |payload longer t|",
		"  0020  68 61 6e 20 73 69 78 74  65 65 6e 20 62 79 74 65  |han sixteen byte|",
		"  0030  73                                                |s|",
	}
	for i, w := range wantHex {
		if out[1+i] != w {
			t.Errorf("hex line %d\n got %q\nwant %q", i, out[1+i], w)
		}
	}
	if !strings.Contains(p.Stderr.String(), "cndump: 1 message printed") {
		t.Errorf("no summary on stderr:\n%s", p.Stderr)
	}
}

func TestDumpFiltersByIDAndSnaps(t *testing.T) {
	tx := dialSender(t)
	p, _ := startDump(t, "-g", "22", "-id", "0x99:8", "-c", "1", "-snap", "4")
	multicast(t, tx, 22, connector.Message{ID: connector.CBID{Idx: 0x99, Val: 7}, Data: []byte("skip me")})
	multicast(t, tx, 22, connector.Message{ID: connector.CBID{Idx: 0x98, Val: 8}, Data: []byte("skip me too")})
	multicast(t, tx, 22, connector.Message{ID: connector.CBID{Idx: 0x99, Val: 8}, Seq: 3, Data: []byte("take me")})
	if code := p.Wait(t, timeout); code != 0 {
		t.Fatalf("cndump exited with %d; stderr:\n%s", code, p.Stderr)
	}
	out := p.Stdout.String()
	if strings.Contains(out, "skip") || strings.Contains(out, "153:7") || strings.Contains(out, "152:8") {
		t.Errorf("filtered messages were printed:\n%s", out)
	}
	if !strings.Contains(out, "id 153:8 seq 3 ack 0 len 7") {
		t.Errorf("the matching message is missing:\n%s", out)
	}
	if !strings.Contains(out, "|take|") || !strings.Contains(out, "... 3 more bytes (-snap 4)") {
		t.Errorf("payload not cut at 4 bytes:\n%s", out)
	}
}

func TestDumpPrintsUnicastToItsPort(t *testing.T) {
	tx := dialSender(t)
	p, port := startDump(t, "-g", "23", "-c", "1", "-hex=false")
	err := tx.SendTo(port, connector.Message{ID: connector.CBID{Idx: 0x99, Val: 9}, Data: []byte("direct")})
	if errors.Is(err, os.ErrPermission) {
		t.Skipf("unicast to a port needs CAP_NET_ADMIN, which this test lacks: %v", err)
	}
	if err != nil {
		t.Fatalf("send to cndump's port %d: %v", port, err)
	}
	if code := p.Wait(t, timeout); code != 0 {
		t.Fatalf("cndump exited with %d; stderr:\n%s", code, p.Stderr)
	}
	out := p.Stdout.All()
	want := fmt.Sprintf("from port %d unicast: id 153:9 seq 0 ack 0 len 6 flags 0x0000", tx.PortID())
	if len(out) != 1 || !strings.HasSuffix(out[0], want) {
		t.Errorf("got\n%s\nwant one line ending in %q (no hex dump)", p.Stdout, want)
	}
}

// TestDumpDecodesProcEvents subscribes cndump to process events, runs a
// child that exits with status 7, and looks for its decoded fork and exit.
// A userspace message sent to a joined group first must be dropped and
// counted by -kernel-only.
func TestDumpDecodesProcEvents(t *testing.T) {
	tx := dialSender(t)
	p, _ := startDump(t, "-g", "1,27", "-id", "proc", "-listen-proc", "-kernel-only", "-hex=false", "-rcvbuf", "67108864")
	multicast(t, tx, 27, connector.Message{ID: connector.IDProc, Data: make([]byte, 40)})
	found := false
	for attempt := 1; attempt <= 5 && !found; attempt++ {
		mark := p.Stdout.Len()
		child := testutil.HelperCommand(t, exit7)
		err := child.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 7 {
			t.Fatalf("helper child: got %v, want exit status 7", err)
		}
		pid := child.Process.Pid
		hasPID := func(s string) bool { return strings.Contains(s, fmt.Sprintf(" pid=%d ", pid)) }
		fork := func(s string) bool { return strings.Contains(s, "proc fork ") && hasPID(s) }
		exit := func(s string) bool {
			return strings.Contains(s, "proc exit ") && hasPID(s) && strings.Contains(s, "code=0x700 signal=17 (exited with status 7)")
		}
		overrun := func(s string) bool { return strings.Contains(s, "!! overrun") }
		_, err1 := p.Stdout.WaitFrom(mark, timeout, func(s string) bool { return fork(s) || overrun(s) })
		_, err2 := p.Stdout.WaitFrom(mark, timeout, func(s string) bool { return exit(s) || overrun(s) })
		if err1 != nil || err2 != nil {
			t.Fatalf("neither the events of pid %d nor an overrun report came: %v %v; stdout:\n%s", pid, err1, err2, p.Stdout)
		}
		_, err1 = p.Stdout.WaitFrom(mark, time.Second, fork)
		_, err2 = p.Stdout.WaitFrom(mark, time.Second, exit)
		found = err1 == nil && err2 == nil
		if !found {
			t.Logf("the events of pid %d were lost in an overrun (the machine is busy): trying again", pid)
		}
	}
	if !found {
		t.Fatal("every attempt lost its events to overruns")
	}
	p.Signal(t, syscall.SIGINT)
	if code := p.Wait(t, timeout); code != 0 {
		t.Fatalf("cndump exited with %d after SIGINT; stderr:\n%s", code, p.Stderr)
	}
	if out := p.Stdout.String(); strings.Contains(out, "from port") {
		t.Errorf("-kernel-only printed a userspace message:\n%s", out)
	}
	st := p.Stderr.Find(t, time.Second, "the summary", func(s string) bool {
		return strings.HasPrefix(s, "cndump: ") && strings.Contains(s, " printed; received ")
	})
	if !strings.Contains(st, " 1 foreign dropped") {
		t.Errorf("summary does not count the one userspace message as foreign: %q", st)
	}
}

func TestDumpStopsOnSIGTERM(t *testing.T) {
	p, _ := startDump(t, "-g", "28")
	p.Signal(t, syscall.SIGTERM)
	if code := p.Wait(t, timeout); code != 0 {
		t.Fatalf("cndump exited with %d after SIGTERM; stderr:\n%s", code, p.Stderr)
	}
	p.Stderr.Find(t, time.Second, "the summary", func(s string) bool { return strings.Contains(s, "0 messages printed") })
}

func TestUsageErrors(t *testing.T) {
	// Each usage error names the flag that was wrong.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-g", "0"}, "-g 0"},
		{[]string{"-g", "33"}, "-g 33"},
		{[]string{"-g", "5-3"}, "-g 5-3"},
		{[]string{"-g", "x"}, "-g x"},
		{[]string{"-id", "nope"}, "-id"},
		{[]string{"-id", "1:x"}, "-id"},
		{[]string{"-c", "-1"}, "-c -1"},
		{[]string{"-snap", "-1"}, "-snap -1"},
		{[]string{"-rcvbuf", "-1"}, "-rcvbuf -1"},
		{[]string{"-rcvbuf", "3000000000"}, "3000000000"}, // on 386 the flag package refuses it, naming the flag too
		{[]string{"-g", "21", "-listen-proc"}, "-listen-proc"},
		{[]string{"extra"}, "extra"},
		{[]string{"-no-such-flag"}, "-no-such-flag"},
	} {
		err := run(context.Background(), tc.args, io.Discard, io.Discard)
		if !errors.As(err, new(cli.UsageError)) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.args[0]) {
			t.Errorf("run(%q) = %v, want a usage error naming %q", tc.args, err, tc.want)
		}
	}
	// The flag package prints its own errors; the program does not repeat
	// them.
	if code, _, stderr := testutil.RunHelperExit(t, timeout, program, "-no-such-flag"); code != 2 || strings.Count(stderr, "-no-such-flag") != 1 {
		t.Errorf("cndump -no-such-flag: exit %d, stderr %q; want 2 and one mention", code, stderr)
	}
	code, _, stderr := testutil.RunHelperExit(t, timeout, program, "-g", "99")
	if code != 2 || !strings.Contains(stderr, `bad group "99": groups are numbered 1 to 32`) {
		t.Errorf("cndump -g 99: exit %d, stderr %q; want 2 and the reason", code, stderr)
	}
}

func TestParseGroups(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string
		all  bool
	}{
		{"all", "1-32", true},
		{"1", "1", false},
		{"1,3,20-23", "1,3,20-23", false},
		{"23-20", "", false},
		{" 5 , 5, 4-6", "5,4,6", false},
	} {
		gs, all, err := parseGroups(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("parseGroups(%q) succeeded, want an error", tt.in)
			}
			continue
		}
		if err != nil || all != tt.all {
			t.Errorf("parseGroups(%q) = %v, %v, %v", tt.in, gs, all, err)
			continue
		}
		if got := joinGroupsText(gs); got != tt.want {
			t.Errorf("parseGroups(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
	if got := formatGroups([]connector.Group{1, 2, 3, 5, 7, 8}); got != "1-3,5,7-8" {
		t.Errorf("formatGroups = %q", got)
	}
}

// joinGroupsText prints groups in order, ranges compressed only when the
// input was sorted, so that duplicates and order are visible.
func joinGroupsText(gs []connector.Group) string {
	sorted := true
	for i := 1; i < len(gs); i++ {
		if gs[i] <= gs[i-1] {
			sorted = false
		}
	}
	if sorted {
		return formatGroups(gs)
	}
	var s []string
	for _, g := range gs {
		s = append(s, g.String())
	}
	return strings.Join(s, ",")
}

func TestParseID(t *testing.T) {
	for _, tt := range []struct {
		in  string
		ok  bool
		id  connector.CBID
		hit bool
	}{
		{"proc", true, connector.IDProc, true},
		{"proc", true, connector.CBID{Idx: 1, Val: 2}, false},
		{"W1", true, connector.IDW1, true},
		{"14:0x456", true, connector.CBID{Idx: 14, Val: 0x456}, true},
		{"14:*", true, connector.CBID{Idx: 14, Val: 99}, true},
		{"14", true, connector.CBID{Idx: 14, Val: 1}, true},
		{"14", true, connector.CBID{Idx: 15, Val: 1}, false},
		{"bb", true, connector.CBID{Idx: 5, Val: 3}, true},
		{"0x10:", false, connector.CBID{}, false},
		{"", false, connector.CBID{}, false},
	} {
		var f idFilter
		err := f.Set(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("Set(%q) error = %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if tt.ok && f.match(tt.id) != tt.hit {
			t.Errorf("-id %s matches %v = %v, want %v", tt.in, tt.id, !tt.hit, tt.hit)
		}
	}
	if !(idFilter(nil)).match(connector.CBID{Idx: 77}) {
		t.Error("an empty filter must match everything")
	}
}

func TestHexDump(t *testing.T) {
	got := string(appendHexDump(nil, []byte("\x00\x01abc\x7f\xff"), ""))
	want := "0000  00 01 61 62 63 7f ff                              |..abc..|\n"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if s := appendHexDump(nil, nil, ""); len(s) != 0 {
		t.Errorf("empty payload dumped as %q", s)
	}
}
