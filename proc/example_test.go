package proc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/cnlink/connector/proc"
)

// This program prints every command that runs on the machine with its exit
// status, until interrupted. It subscribes to exec and exit events only (the
// kernel filters on Linux 6.6 and later), remembers each process that calls
// execve, and reports how it ended when its main thread exits.
func Example() {
	l, err := proc.Listen(&proc.Config{Kinds: proc.KindExec | proc.KindExit})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	type run struct {
		cmdline string
		start   uint64 // exec timestamp, CLOCK_MONOTONIC ns
	}
	running := map[int32]run{} // by process id (TGID)
	for ev, err := range l.Events(ctx) {
		if err != nil {
			if ctx.Err() != nil {
				break // interrupted
			}
			log.Print(err) // a malformed message: report it and go on
			continue
		}
		switch ev.Kind {
		case proc.KindExec:
			// Read the command line now: the process may be gone soon.
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", ev.TGID))
			cmd := string(bytes.ReplaceAll(bytes.TrimRight(b, "\x00"), []byte{0}, []byte{' '}))
			running[ev.TGID] = run{cmdline: cmd, start: ev.Timestamp}
		case proc.KindExit:
			if ev.IsThread() {
				continue // a thread ended, not the process
			}
			r, ok := running[ev.TGID]
			if !ok {
				continue // it started before we listened
			}
			delete(running, ev.TGID)
			took := time.Duration(ev.Timestamp - r.start)
			switch ws := ev.WaitStatus(); {
			case ws.Exited():
				fmt.Printf("%d %q: exit status %d after %v\n", ev.TGID, r.cmdline, ws.ExitStatus(), took)
			case ws.Signaled():
				fmt.Printf("%d %q: killed by %v after %v\n", ev.TGID, r.cmdline, ws.Signal(), took)
			}
		case proc.KindLost:
			fmt.Println("some events were lost: exits may be missing")
		}
	}
}

// Next fills one reusable Event and allocates nothing. After a loss, the
// live processes can be listed again to rebuild state.
func ExampleListener_Next() {
	l, err := proc.Listen(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	fmt.Println("filter mode:", l.Mode())

	var ev proc.Event
	for {
		if err := l.Next(&ev); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			log.Fatal(err)
		}
		if ev.Kind == proc.KindLost {
			ps, err := proc.Snapshot()
			if err != nil {
				log.Fatal(err)
			}
			fmt.Printf("lost %d events on cpu %d; %d processes are running\n", ev.Lost, ev.CPU, len(ps))
			continue
		}
		fmt.Println(ev.String())
	}
}

// Snapshot lists the live processes, for example to know which processes
// existed before the Listener started.
func ExampleSnapshot() {
	ps, err := proc.Snapshot()
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range ps {
		fmt.Printf("%d %s (parent %d, uid %d)\n", p.PID, p.Comm, p.PPID, p.RUID)
	}
}

// A WaitStatus prints as os.ProcessState does.
func ExampleWaitStatus_String() {
	fmt.Println(proc.WaitStatus(3 << 8)) // exit(3)
	fmt.Println(proc.WaitStatus(9))      // SIGKILL
	// Output:
	// exit status 3
	// signal: killed
}
