//go:build linux

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/testutil"
	"github.com/cnlink/connector/proc"
)

// floodHelper sends subscription requests with an invalid operation until
// stdin closes: the kernel acknowledges each (EINVAL; EPERM before 6.6) to
// every group-1 socket without a narrowing filter. Any local user can.
func floodHelper() int {
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
	op := []byte{3, 0, 0, 0} // neither LISTEN nor IGNORE
	for ack := uint32(1); ; ack++ {
		select {
		case <-stop:
			return 0
		default:
		}
		if err := c.Send(connector.Message{ID: connector.IDProc, Ack: ack, Data: op}); err != nil {
			fmt.Fprintln(os.Stderr, "send:", err)
			return 21
		}
	}
}

// TestKernelAckFlood: an unprivileged process flooding the kernel with
// subscription requests (whose acknowledgements go to every unfiltered
// proc socket) costs procmon none of a fork workload's events.
func TestKernelAckFlood(t *testing.T) {
	skipUnlessListen(t)
	// About 5000 events of buffer: the flood fills that in milliseconds
	// when its acknowledgements reach the socket.
	mon := testutil.StartHelper(t, program, "--json", "-rcvbuf", "2097152", "-p", strconv.Itoa(os.Getpid()))
	mon.Stderr.FindPrefix(t, timeout, "procmon: listening")

	start := func(nobody bool) (*exec.Cmd, io.WriteCloser, io.Reader, error) {
		c := helperCmd(t, "flood")
		if nobody {
			c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		}
		stdin, _ := c.StdinPipe()
		out, _ := c.StdoutPipe()
		return c, stdin, out, c.Start()
	}
	// As nobody when this test runs as root; the test binary may sit
	// where nobody cannot run it, and then the flood comes from this uid.
	flooder, stdin, out, err := start(os.Geteuid() == 0)
	if err != nil && os.Geteuid() == 0 {
		t.Logf("running the flooder as nobody: %v; running it as root", err)
		flooder, stdin, out, err = start(false)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); _ = flooder.Wait() }()
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "flooding\n" {
		t.Fatalf("flooder said %q", line)
	}
	// The flood is real: an unfiltered socket in group 1 gets its
	// acknowledgements.
	passive, err := connector.Dial(&connector.Config{Groups: []connector.Group{1}, Senders: connector.SendersKernelOnly})
	if err != nil {
		t.Skipf("a passive group-1 socket: %v", err)
	}
	defer passive.Close()
	acks := 0
	_ = passive.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	for {
		msgs, _, err := passive.Receive()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		for _, m := range msgs {
			var ev proc.Event
			if proc.Decode(m, &ev) == nil && ev.Kind == proc.KindNone && ev.AckErr != 0 {
				acks++
			}
		}
	}
	if acks < 100 {
		t.Skipf("only %d flood acknowledgements reached an unfiltered socket in 100 ms: no flood to test against", acks)
	}

	// Other programs' process storms can still overrun the buffer (the
	// race detector slows procmon down): such an attempt reports its loss
	// and is tried again.
	retry(t, func() error {
		mark := mon.Stdout.Len()
		const children = 30
		var pids []int
		for range children {
			pids = append(pids, runHelper(t, "exit3", 3))
		}
		for _, pid := range pids {
			for _, kind := range []string{"fork", "exit"} {
				e, err := awaitJSON(t, mon, mark, fmt.Sprintf("the %s of %d", kind, pid), func(e jsonEvent) bool { return e.Kind == kind && e.PID == pid })
				if err != nil {
					return err
				}
				if kind == "exit" && (e.ExitCode == nil || *e.ExitCode != 3) {
					t.Errorf("exit record %+v: want status 3", e)
				}
			}
		}
		return nil
	})
	t.Logf("%d flood acknowledgements in 100 ms reached an unfiltered socket; procmon got all 60 workload events", acks)
}
