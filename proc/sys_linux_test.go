//go:build linux

package proc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/testutil"
	"github.com/google/go-cmp/cmp"
)

func TestProcEventsIn(t *testing.T) {
	w1 := connector.Agent{Name: "w1", ID: connector.IDW1}
	cnproc := connector.Agent{Name: "cn_proc", ID: connector.IDProc}
	for _, tc := range []struct {
		name   string
		agents []connector.Agent
		err    error
		want   error
	}{
		{"registered", []connector.Agent{cnproc}, nil, nil},
		{"with others", []connector.Agent{w1, cnproc}, nil, nil},
		{"missing", []connector.Agent{w1}, nil, ErrNoProcEvents},
		{"none", nil, nil, ErrNoProcEvents},
		// Without the list (another network namespace) nothing is concluded.
		{"no list", nil, fs.ErrNotExist, nil},
	} {
		if err := procEventsIn(tc.agents, tc.err); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: procEventsIn = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestIntegrationCheckProcEvents(t *testing.T) {
	if _, err := os.Stat("/proc/net/connector"); err != nil {
		t.Skipf("no /proc/net/connector: %v", err)
	}
	if err := checkProcEvents(); err != nil {
		t.Skipf("this kernel lacks CONFIG_PROC_EVENTS: %v", err)
	}
	// The test binary runs in the initial namespaces (root, not in a
	// container); the check must agree.
	if err := checkNamespaces(); err != nil {
		t.Errorf("checkNamespaces in the initial namespaces: %v", err)
	}
}

const netlinkTable = `sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode
00000000e6b5cdff 0   0          00000000 0        0        0     2        0        4
00000000aaaaaaaa 11  4242       00000001 0        0        0     2        17       5555
00000000bbbbbbbb 16  4242       00000000 0        0        0     2        3        5556
00000000cccccccc 11  99         00000001 0        0        0     2        5        5557
`

// parseNetlinkDrops reads the /proc/net/netlink table
// (net/netlink/af_netlink.c, netlink_seq_show): sk, Eth (protocol), Pid
// (port id), Groups, Rmem, Wmem, Dump, Locks, Drops, Inode. The tests
// compare the socket's own counter (SO_MEMINFO) with it.
func parseNetlinkDrops(r io.Reader, port uint32) (uint64, error) {
	sc := bufio.NewScanner(r)
	want := strconv.FormatUint(uint64(port), 10)
	header := true
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if header {
			header = false
			if len(f) < 9 || f[1] != "Eth" || f[2] != "Pid" || f[8] != "Drops" {
				return 0, fmt.Errorf("unexpected /proc/net/netlink header %q", sc.Text())
			}
			continue
		}
		if len(f) < 9 || f[1] != "11" || f[2] != want {
			continue
		}
		return strconv.ParseUint(f[8], 10, 64)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no connector socket with port id %d in /proc/net/netlink: %w", port, fs.ErrNotExist)
}

func TestParseNetlinkDrops(t *testing.T) {
	n, err := parseNetlinkDrops(strings.NewReader(netlinkTable), 4242)
	if err != nil || n != 17 {
		t.Errorf("drops of port 4242 = %d, %v; want 17", n, err)
	}
	if _, err := parseNetlinkDrops(strings.NewReader(netlinkTable), 7); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("absent port: %v, want ErrNotExist", err)
	}
}

// Listener.Drops reads the socket's own counter: the kernel's
// /proc/net/netlink agrees with it, it works for a socket in another
// network namespace, and it fails with ErrClosed after Close.
func TestIntegrationDrops(t *testing.T) {
	l := listen(t, nil)
	if err := l.SetReadBuffer(1); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		runHelperProc(t, "exit3")
	}
	// Other programs' events keep the counter moving: the kernel's table,
	// read between two reads of the socket's counter, lies between them.
	before, err := l.Drops()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/net/netlink")
	if err != nil {
		t.Fatal(err)
	}
	table, err := parseNetlinkDrops(f, l.c.PortID())
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	after, err := l.Drops()
	if err != nil {
		t.Fatal(err)
	}
	if before == 0 || table < before || table > after {
		t.Errorf("Drops() = %d then %d, /proc/net/netlink says %d in between; want it between them, and above 0 after 4 children with a minimal buffer", before, after, table)
	}
	l.Close()
	if _, err := l.Drops(); !errors.Is(err, connector.ErrClosed) {
		t.Errorf("Drops after Close: %v, want ErrClosed", err)
	}

	ns := testutil.NewNetNS(t)
	c, err := connector.Dial(&connector.Config{NetNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n, err := c.Drops(); err != nil || n != 0 {
		t.Errorf("drops of a socket in another network namespace = %d, %v; want 0, nil", n, err)
	}
}

func TestParseStat(t *testing.T) {
	line := "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 3 0 4567 1000 100 18446744073709551615\n"
	var p Process
	if err := parseStat([]byte(line), &p); err != nil {
		t.Fatal(err)
	}
	want := Process{PID: 1234, TGID: 1234, PPID: 1, PGID: 1234, SID: 1234, Comm: "a (weird) name", State: 'S', Threads: 3,
		StartTime: 45670 * time.Millisecond}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("parseStat (-want +got):\n%s", diff)
	}
	for _, bad := range []string{
		"", "1234", "1234 (x", "x (y) S 1 2 3", "1234 (x) S 1 2",
		"1234 (x) SS 1 1234 1234 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 3 0 4567",
		"1234 (x) S z 1234 1234 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 3 0 4567",
		"1234 (x) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 -3 0 4567",
		"1234 (x) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 3 0 99999999999999999999",
	} {
		if err := parseStat([]byte(bad), &p); err == nil {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
}

func TestParseStatus(t *testing.T) {
	status := "Name:\tx\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\n"
	var p Process
	if err := parseStatus([]byte(status), &p); err != nil {
		t.Fatal(err)
	}
	if p.RUID != 1 || p.EUID != 2 || p.RGID != 5 || p.EGID != 6 {
		t.Errorf("parseStatus = %+v", p)
	}
	for _, bad := range []string{"", "Uid:\t1\t2\t3\t4\n", "Uid:\t1\nGid:\t1\t2\n", "Uid:\tx\t2\nGid:\t1\t2\n"} {
		if err := parseStatus([]byte(bad), &p); err == nil {
			t.Errorf("parseStatus(%q) accepted", bad)
		}
	}
}

func TestSnapshotDir(t *testing.T) {
	root := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("1/stat", "1 (init) S 0 1 1 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 1 0 2 1000 100\n")
	write("1/status", "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n")
	write("42/stat", "42 (sh) R 1 42 42 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 2 0 300 1000 100\n")
	write("42/status", "Uid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\n")
	write("43/stat", "") // exited while read: the kernel returns nothing
	write("self/stat", "1 (init) S 0 1 1 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 1 0 2 1000 100\n")
	write("net/connector", "")
	if err := os.MkdirAll(filepath.Join(root, "44"), 0o755); err != nil { // exited: no files
		t.Fatal(err)
	}
	// The kernel's answers when a process exits during the read (ESRCH)
	// or hides it (EACCES under hidepid=1).
	write("46/stat", "")
	write("47/stat", "")
	read := func(name string) ([]byte, error) {
		switch name {
		case filepath.Join(root, "46/stat"):
			return nil, &fs.PathError{Op: "read", Path: name, Err: syscall.ESRCH}
		case filepath.Join(root, "47/stat"):
			return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EACCES}
		}
		return os.ReadFile(name)
	}
	ps, err := snapshot(root, read)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int32]Process{}
	for _, p := range ps {
		if p.PID == 47 {
			if !errors.Is(p.Err, os.ErrPermission) || p.TGID != 47 {
				t.Errorf("unreadable process listed as %+v, want PID 47 with an Err matching os.ErrPermission", p)
			}
			continue
		}
		got[p.PID] = p
	}
	want := map[int32]Process{
		1:  {PID: 1, TGID: 1, State: 'S', PGID: 1, SID: 1, Comm: "init", Threads: 1, StartTime: 20 * time.Millisecond},
		42: {PID: 42, TGID: 42, PPID: 1, PGID: 42, SID: 42, Comm: "sh", State: 'R', Threads: 2, StartTime: 3 * time.Second, RUID: 1000, EUID: 1000, RGID: 100, EGID: 100},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("snapshot (-want +got):\n%s", diff)
	}
	write("45/stat", "45 (bad")
	write("45/status", "")
	write("48/stat", "1 (init) S 0 1 1 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 1 0 2 1000 100\n")
	write("48/status", "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n")
	ps, err = snapshot(root, read)
	if err != nil {
		t.Fatalf("a malformed stat file failed the listing: %v", err)
	}
	bad := 0
	for _, p := range ps {
		if p.Err != nil && (p.PID == 45 || p.PID == 48) {
			bad++
		}
	}
	if bad != 2 || len(ps) != 5 {
		t.Errorf("listing %+v: want 5 processes, 45 (malformed) and 48 (names pid 1) with Err set", ps)
	}
	if _, err := snapshot(filepath.Join(root, "absent"), os.ReadFile); err == nil {
		t.Error("an absent root was accepted")
	}
}

// FuzzParseStat checks that the /proc/<pid>/stat parser never panics.
func FuzzParseStat(f *testing.F) {
	if b, err := os.ReadFile("/proc/self/stat"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 3 0 4567 1000 100\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Process
		if parseStat(b, &p) == nil && (p.PID != p.TGID || p.Threads < 0 || p.StartTime < 0) {
			t.Fatalf("inconsistent result %+v", p)
		}
	})
}

// FuzzParseStatus checks that the /proc/<pid>/status parser never panics.
func FuzzParseStatus(f *testing.F) {
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("Uid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Process
		_ = parseStatus(b, &p)
	})
}

// Reading the drop counter on a gap must not allocate: Next stays free of
// allocations however many gaps other processes' acknowledgements make.
func TestIntegrationDropReaderAllocs(t *testing.T) {
	c, err := connector.Dial(nil)
	if err != nil {
		t.Skipf("no connector socket: %v", err)
	}
	defer c.Close()
	if _, err := c.Drops(); err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(100, func() { _, _ = c.Drops() }); a != 0 {
		t.Errorf("reading the drop counter allocates %v times, want 0", a)
	}
}

// The socket filter that keeps other processes' acknowledgements out of a
// Listener before Linux 6.6, on the real kernel: a socket with it gets the
// events and not the acknowledgements that an unfiltered socket gets.
func TestIntegrationAckFilter(t *testing.T) {
	testutil.RequireProcEvents(t)
	testutil.RequireInitialNetNS(t)
	cfg := &connector.Config{Groups: []connector.Group{1}, Senders: connector.SendersKernelOnly, ReadBufferSize: 8 << 20}
	filtered, err := connector.Dial(cfg)
	if err != nil {
		t.Skipf("privilege missing: joining group 1 (CAP_NET_ADMIN before Linux 6.6): %v", err)
	}
	defer filtered.Close()
	if err := filtered.SetBPF(ackFilter); err != nil {
		t.Fatal(err)
	}
	plain, err := connector.Dial(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	// Someone must listen for events and acknowledgements to flow.
	l := listen(t, nil)
	_ = l
	sender, err := connector.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	const nonce = 0x5eed0001
	if err := sender.Send(connector.Message{ID: connector.IDProc, Ack: nonce, Data: []byte{3, 0, 0, 0}}); err != nil {
		t.Fatal(err)
	}
	pid := runHelperProc(t, "exit3")
	// count reads c until the helper's exit arrived, and reports whether
	// the acknowledgement of the request above came too.
	count := func(c *connector.Conn) (ack, exit bool) {
		t.Helper()
		if err := c.SetReadDeadline(time.Now().Add(eventTimeout)); err != nil {
			t.Fatal(err)
		}
		for !exit {
			msgs, _, err := c.Receive()
			if errors.Is(err, connector.ErrOverrun) {
				continue
			}
			if err != nil {
				t.Fatalf("waiting for the exit of %d: %v", pid, err)
			}
			for _, m := range msgs {
				var ev Event
				if Decode(m, &ev) != nil {
					continue
				}
				switch {
				case ev.Kind == KindNone && ev.Ack == nonce+1:
					ack = true
				case ev.Kind == KindExit && ev.PID == pid:
					exit = true
				}
			}
		}
		return ack, exit
	}
	if ack, _ := count(plain); !ack {
		t.Fatal("the unfiltered socket did not get the acknowledgement: nothing to compare with")
	}
	if ack, _ := count(filtered); ack {
		t.Error("the acknowledgement passed the socket filter")
	}
}
