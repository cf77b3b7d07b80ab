//go:build linux

package proc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/testutil"
	"golang.org/x/sys/unix"
)

// unprivComm is the name the unprivileged helper gives its thread, to cause
// a COMM event it then waits for.
const unprivComm = "cnproc-unpriv"

// TestIntegrationUnprivileged checks, in a child that gave up root, what the
// running kernel allows without privileges, and that it matches what the
// package documents for that kernel version: from 6.6 on, the proc group and
// the other odd-numbered groups can be joined, even groups cannot, and the
// event filter works unprivileged; before 6.6, every join needs
// CAP_NET_ADMIN, and Listen says so with an error matching
// os.ErrPermission.
func TestIntegrationUnprivileged(t *testing.T) {
	testutil.RequireProcEvents(t)
	testutil.RequireInitialNetNS(t)
	if os.Geteuid() != 0 {
		t.Skip("privilege missing: the test needs root to switch its child to uid 65534")
	}
	major, minor := kernelVersion(t)
	modern := major > 6 || major == 6 && minor >= 6

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=unpriv")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := make(chan struct{})
	timer := time.AfterFunc(30*time.Second, func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
		}
	})
	out, err := cmd.Output()
	close(done)
	timer.Stop()
	if err != nil {
		t.Fatalf("unprivileged helper: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.Bytes())
	}
	got := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ": ")
		got[k] = v
	}
	t.Logf("kernel %d.%d, uid 65534 without capabilities: %v", major, minor, got)

	want := map[string]string{
		"cap_net_admin": "absent",
		"join group 2":  "EPERM",
	}
	if modern {
		want["join group 1"] = "ok"
		want["join group 3"] = "ok"
		want["listen"] = "ok, mode " + ModeKernelFilter.String()
		want["event"] = "COMM " + unprivComm
	} else {
		want["join group 1"] = "EPERM"
		want["join group 3"] = "EPERM"
		want["listen"] = "os.ErrPermission"
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("kernel %d.%d unprivileged %s: got %q, want %q", major, minor, k, got[k], v)
		}
	}
	if t.Failed() {
		t.Logf("helper stderr:\n%s", stderr.Bytes())
	}
}

// helperUnprivileged drops root for good (uid and gid 65534 on every
// thread, which clears all capabilities) and prints, one "key: value" line
// each, what the kernel then allows.
func helperUnprivileged() int {
	if err := syscall.Setgroups(nil); err != nil {
		fmt.Fprintln(os.Stderr, "setgroups:", err)
		return 10
	}
	if err := syscall.Setresgid(65534, 65534, 65534); err != nil {
		fmt.Fprintln(os.Stderr, "setresgid:", err)
		return 11
	}
	if err := syscall.Setresuid(65534, 65534, 65534); err != nil {
		fmt.Fprintln(os.Stderr, "setresuid:", err)
		return 12
	}
	if has, err := testutil.HasCapability(unix.CAP_NET_ADMIN); err != nil {
		fmt.Println("cap_net_admin: error", err)
	} else if has {
		fmt.Println("cap_net_admin: present")
	} else {
		fmt.Println("cap_net_admin: absent")
	}

	for _, g := range []connector.Group{1, 2, 3} {
		c, err := connector.Dial(&connector.Config{Groups: []connector.Group{g}})
		switch {
		case err == nil:
			c.Close()
			fmt.Printf("join group %d: ok\n", g)
		case errors.Is(err, syscall.EPERM):
			fmt.Printf("join group %d: EPERM\n", g)
		default:
			fmt.Printf("join group %d: %v\n", g, err)
		}
	}

	l, err := Listen(&Config{Kinds: KindComm, AckTimeout: 2 * time.Second})
	switch {
	case err == nil:
		fmt.Println("listen: ok, mode", l.Mode())
	case errors.Is(err, os.ErrPermission):
		fmt.Println("listen: os.ErrPermission")
		return 0
	default:
		fmt.Println("listen:", err)
		return 0
	}
	defer l.Close()

	// Rename this thread: the kernel reports a COMM event for it.
	runtime.LockOSThread()
	name := append([]byte(unprivComm), 0)
	if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&name[0])), 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "prctl:", err)
		return 13
	}
	if err := l.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		fmt.Fprintln(os.Stderr, "deadline:", err)
		return 14
	}
	var ev Event
	for {
		if err := l.Next(&ev); err != nil {
			fmt.Println("event: none:", err)
			return 0
		}
		if ev.Kind == KindComm && int(ev.TGID) == os.Getpid() {
			fmt.Println("event: COMM", ev.CommString())
			return 0
		}
	}
}
