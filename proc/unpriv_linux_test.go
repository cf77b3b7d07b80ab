//go:build linux

package proc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
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
	major, minor := testutil.KernelVersion(t)
	modern := major > 6 || major == 6 && minor >= 6

	cmd := helperCmd(t, "unpriv")
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
	got := testutil.KeyValues(out)
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
	if t.Failed() || stderr.Len() > 0 {
		t.Logf("helper stderr:\n%s", stderr.Bytes())
	}
}

// helperUnprivileged drops root for good (uid and gid 65534 on every
// thread, which clears all capabilities) and prints, one "key: value" line
// each, what the kernel then allows.
func helperUnprivileged() int {
	if code := dropRoot(); code != 0 {
		return code
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
	rename := func() bool {
		if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&name[0])), 0, 0, 0); err != nil {
			fmt.Fprintln(os.Stderr, "prctl:", err)
			return false
		}
		return true
	}
	if !rename() {
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
		switch {
		case ev.Kind == KindComm && int(ev.TGID) == os.Getpid():
			fmt.Println("event: COMM", ev.CommString())
			return 0
		case ev.Kind == KindLost:
			// Other processes' renames overran the buffer (the filter
			// passes every COMM event): ours may be among those lost, so
			// rename again. Other events are other processes'.
			fmt.Fprintln(os.Stderr, "loss reported, renaming again:", ev.Lost, "lost")
			if !rename() {
				return 13
			}
		}
	}
}

// dropRoot makes this process uid and gid 65534 on every thread, which
// clears all capabilities. It returns a nonzero exit code on failure.
func dropRoot() int {
	if os.Geteuid() != 0 {
		return 0 // already unprivileged
	}
	if err := testutil.BecomeNobody(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 10
	}
	return 0
}

// helperFlood is the unprivileged attacker: it sends subscription requests
// with an invalid operation, each of which the kernel acknowledges (EINVAL)
// to every group-1 socket without a narrowing filter, until stdin closes.
// It prints "flooding" when it starts and the number of requests at the end.
func helperFlood() int {
	if code := dropRoot(); code != 0 {
		return code
	}
	c, err := connector.Dial(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		return 20
	}
	defer c.Close()
	stop := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	fmt.Println("flooding")
	op := []byte{3, 0, 0, 0} // neither LISTEN nor IGNORE: EINVAL
	n := 0
	for ack := uint32(1); ; ack++ {
		select {
		case <-stop:
			fmt.Println("sent", n)
			return 0
		default:
		}
		if err := c.Send(connector.Message{ID: connector.IDProc, Ack: ack, Data: op}); err != nil {
			fmt.Fprintln(os.Stderr, "send:", err)
			return 21
		}
		n++
	}
}

// An unprivileged process flooding the kernel with invalid subscription
// requests makes it acknowledge each to every unfiltered proc socket. A
// Listener must lose none of a fork workload's events to that flood, in
// every mode: the kernel filter (6.6+) or a socket filter (older kernels)
// keeps other processes' acknowledgements out.
func TestIntegrationAckFlood(t *testing.T) {
	testutil.RequireProcEvents(t)
	testutil.RequireInitialNetNS(t)
	for _, kinds := range []Kind{0, KindFork | KindExit} {
		t.Run(kinds.String(), func(t *testing.T) {
			// The buffer holds about 40000 events: the flood (about
			// 100000 acknowledgements a second here) would fill it
			// within the workload if they reached the socket.
			l := listen(t, &Config{Kinds: kinds})
			w := trackChildren(t, l)
			// A passive socket in group 1 shows that the flood is real:
			// without a filter, the acknowledgements reach it.
			// Its own socket filter keeps only acknowledgements, so that
			// other programs' event storms cannot crowd them out.
			passive, err := connector.Dial(&connector.Config{Groups: []connector.Group{1}, Senders: connector.SendersKernelOnly, ReadBufferSize: 8 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer passive.Close()
			if err := passive.SetBPF(onlyAcks); err != nil {
				t.Fatal(err)
			}

			flooder := startHelper(t, "flood", nil)
			if got := flooder.line(t, 10*time.Second); got != "flooding" {
				t.Fatalf("flooder said %q", got)
			}
			floodAcks := 0
			if err := passive.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			for {
				msgs, _, err := passive.Receive()
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				for _, m := range msgs {
					var ev Event
					// EINVAL on 6.6+; EPERM before, where the kernel checks
					// CAP_NET_ADMIN first.
					if Decode(m, &ev) == nil && ev.Kind == KindNone && ev.AckErr != 0 {
						floodAcks++
					}
				}
			}
			if floodAcks < 100 {
				t.Fatalf("only %d flood acknowledgements reached an unfiltered socket in 200 ms: the flood is not real", floodAcks)
			}

			// Other programs on the machine may cause storms of real
			// events meanwhile, which can overrun even a large buffer:
			// a round in which loss was reported is repeated. No loss
			// can come from the flood, whose acknowledgements never
			// reach the Listener (checked below).
			delivered := w.rounds(t, 20, 10)
			_ = flooder.p.Stdin.Close()
			st := l.Stats()
			t.Logf("mode %v: %d flood acknowledgements reached a passive socket in 200 ms; the Listener got all %d workload events, %d acks (its own), %d lost, %d overruns",
				l.Mode(), floodAcks, delivered, st.Acks, st.Lost, st.Overruns)
			if l.Mode() != ModeUserFilter && st.Acks > 1 {
				t.Errorf("the Listener received %d acknowledgements, want only its own", st.Acks)
			}
		})
	}
}

// countdownPairs is how many (invalid request, IGNORE) pairs helperCountdown
// sends: more than the listeners a matrix VM has.
const countdownPairs = 16

// helperCountdown is an unprivileged process that sends, from one socket,
// pairs of a request with an invalid operation and an IGNORE: on Linux 6.6
// and later each IGNORE lowers the kernel's global listener count, because
// the socket's previous request was not an IGNORE (cn_proc_mcast_ctl). It
// prints "done".
func helperCountdown() int {
	if code := dropRoot(); code != 0 {
		return code
	}
	c, err := connector.Dial(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		return 30
	}
	defer c.Close()
	for i := range uint32(countdownPairs) {
		for _, op := range []uint32{3, opIgnore} {
			b := make([]byte, 4)
			binary.NativeEndian.PutUint32(b, op)
			if err := c.Send(connector.Message{ID: connector.IDProc, Ack: 2*i + op, Data: b}); err != nil {
				fmt.Fprintln(os.Stderr, "send:", err)
				return 31
			}
		}
	}
	fmt.Println("done")
	return 0
}

// The kernel's global listener count, read in cn_proc.c: since 6.6 an
// unprivileged process drives it below 1 by alternating an invalid request
// and IGNORE on one socket, and then the kernel generates no event at all,
// for every listener, without a trace (see "Loss no socket sees" in the
// package documentation); before 6.6 the same requests from an unprivileged
// process are refused (EPERM) and change nothing. Runs only in the kernel
// matrix: it switches process events off for the whole machine, and turns
// them back on (Rearm; then, as root, LISTEN and an invalid request,
// alternately, which raise the count on every version). CheckEvents must
// tell which happened.
func TestIntegrationListenerCountHazard(t *testing.T) {
	testutil.RequireProcEvents(t)
	testutil.RequireInitialNetNS(t)
	if !testutil.InMatrix() {
		t.Skip("runs only in the kernel matrix: it switches process events off for every process on the machine")
	}
	if os.Geteuid() != 0 {
		t.Skip("privilege missing: the test needs root to switch its helper to uid 65534 and to turn events back on")
	}
	major, minor := testutil.KernelVersion(t)
	modern := major > 6 || major == 6 && minor >= 6
	l := listen(t, &Config{Kinds: KindExec})
	arrives := func(wait time.Duration) bool {
		t.Helper()
		pid := runHelperProc(t, "exit3")
		if err := l.SetDeadline(time.Now().Add(wait)); err != nil {
			t.Fatal(err)
		}
		var ev Event
		for {
			err := l.Next(&ev)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return false
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.Kind == KindExec && ev.PID == pid {
				return true
			}
		}
	}
	if !arrives(eventTimeout) {
		t.Fatal("no exec event before the countdown")
	}
	check := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return CheckEvents(ctx, nil)
	}
	if err := check(); err != nil {
		t.Fatalf("CheckEvents before the countdown: %v", err)
	}
	c := startHelper(t, "countdown", nil)
	if got := c.line(t, 10*time.Second); got != "done" {
		t.Fatalf("countdown helper said %q", got)
	}
	c.wait(t)
	after := arrives(3 * time.Second)
	checked := check()
	t.Logf("Linux %d.%d after the countdown: CheckEvents: %v", major, minor, checked)
	if after != (checked == nil) {
		t.Errorf("CheckEvents says %v, but an exec event arrived: %v", checked, after)
	}
	if checked != nil && !errors.Is(checked, ErrEventsOff) {
		t.Errorf("CheckEvents: %v, want nil or ErrEventsOff", checked)
	}
	if checked != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := l.Rearm(ctx, nil); err != nil {
			t.Fatal(err)
		}
		if err := check(); err != nil {
			t.Errorf("CheckEvents after Rearm: %v", err)
		}
		if !arrives(eventTimeout) {
			t.Error("no exec event after Rearm")
		}
	}

	// Turn events back on for the tests that follow, whatever happened.
	root, err := connector.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for i := range uint32(2 * countdownPairs) {
		for _, op := range []uint32{opListen, 3} {
			b := make([]byte, 4)
			binary.NativeEndian.PutUint32(b, op)
			if err := root.Send(connector.Message{ID: connector.IDProc, Ack: 2*i + op, Data: b}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !arrives(eventTimeout) {
		t.Fatal("no exec event after turning events back on")
	}
	switch {
	case modern && after:
		t.Errorf("Linux %d.%d: an exec event arrived after an unprivileged process sent %d pairs of an invalid request and IGNORE; the kernel source says its listener count drops below 1", major, minor, countdownPairs)
	case !modern && !after:
		t.Errorf("Linux %d.%d: no exec event after an unprivileged process's requests, which this kernel refuses (EPERM)", major, minor)
	}
	t.Logf("Linux %d.%d: events after the unprivileged countdown: %v", major, minor, after)
}
