package proctest_test

import (
	"fmt"
	"log"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/proc"
	"github.com/cnlink/connector/proc/proctest"
)

// failures is the code under test: a consumer of process events that reports
// every process that failed, until it has seen n exits.
func failures(l *proc.Listener, n int) ([]string, error) {
	var out []string
	var ev proc.Event
	for seen := 0; seen < n; {
		if err := l.Next(&ev); err != nil {
			return out, err
		}
		if ev.Kind != proc.KindExit || ev.IsThread() {
			continue
		}
		seen++
		switch ws := ev.WaitStatus(); {
		case ws.Exited() && ws.ExitStatus() != 0:
			out = append(out, fmt.Sprintf("%d exited with status %d", ev.TGID, ws.ExitStatus()))
		case ws.Signaled():
			out = append(out, fmt.Sprintf("%d killed by signal %d", ev.TGID, int(ws.Signal())))
		}
	}
	return out, nil
}

// A unit test of a process event consumer, without privileges and without
// a real kernel: the fake kernel's cn_proc agent answers the subscription
// and sends the events the test chooses, through the Listener's kernel
// filter as Linux 6.6 and later do.
func Example() {
	k := cntest.New(nil)
	agent := proctest.New(k, nil)

	// An unprivileged process may join group 1 on Linux 6.6 and later.
	c, err := k.DialUnprivileged(&connector.Config{
		Groups:  []connector.Group{connector.IDProc.Group()},
		Senders: connector.SendersKernelOnly,
	})
	if err != nil {
		log.Fatal(err)
	}
	l, err := proc.NewListener(c, &proc.Config{Kinds: proc.KindExit})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	fmt.Println("mode:", l.Mode())

	agent.Emit(proc.Event{Kind: proc.KindFork, PID: 101, TGID: 101, ParentPID: 1, ParentTGID: 1}) // filtered out by the kernel
	agent.Emit(proc.Event{Kind: proc.KindExit, PID: 100, TGID: 100, ExitCode: 0, ExitSignal: 17})
	agent.Emit(proc.Event{Kind: proc.KindExit, PID: 102, TGID: 101, ExitCode: 0, ExitSignal: -1}) // a thread
	agent.Emit(proc.Event{Kind: proc.KindExit, PID: 101, TGID: 101, ExitCode: 3 << 8, ExitSignal: 17})
	agent.Emit(proc.Event{Kind: proc.KindExit, PID: 103, TGID: 103, ExitCode: 9, ExitSignal: 17})

	got, err := failures(l, 3)
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range got {
		fmt.Println(s)
	}
	// Output:
	// mode: kernel filter
	// 101 exited with status 3
	// 103 killed by signal 9
}
