//go:build linux

// Command forkstat measures the CPU time that procmon (examples/procmon)
// spends per process event against forkstat's, side by side in one run: the
// monitors run at the same time, see the same storm of events, and each one's
// CPU time is read from its own process CPU clock (the time getrusage(2)
// reports for it), not from the wall clock, so that other load on the
// machine does not count, except through cache and scheduler effects.
//
//	go run ./forkstat                      # from benchmarks/; needs root and forkstat
//	go run ./forkstat -runs 3 -storms fork:20000,threads:20000,exec:6000
//
// Storms (each in a separate process, in C): fork+exit (children that exit
// at once), threads (created and joined), and fork+exec of -program. The
// cost per event is the monitor's CPU time over the storm and its drain
// divided by the events it received: every process event on the machine in
// that time (counted by a listener of this program's own) less those the
// kernel dropped for the monitor's socket. A run in which a monitor lost
// events is reported as such. See examples/README.md for the results.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cnlink/connector/proc"
	"golang.org/x/sys/unix"
)

const stormEnv = "FORKSTAT_CMP_STORM"

func main() {
	if s := os.Getenv(stormEnv); s != "" {
		os.Exit(stormChild(s))
	}
	os.Exit(compare(os.Args[1:]))
}

// stormChild runs "kind:n:program" and prints how many tasks it made.
func stormChild(spec string) int {
	f := strings.SplitN(spec, ":", 3)
	if len(f) != 3 {
		return 2
	}
	n, _ := strconv.Atoi(f[1])
	done, err := runStorm(f[0], n, f[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(done)
	return 0
}

type monitor struct {
	name string
	argv []string
}

type sample struct {
	cpu    time.Duration // CPU time over the storm and the drain
	events uint64        // process events on the machine meanwhile
	drops  uint64        // of them, dropped by the kernel for this monitor's socket
	lost   string        // what the monitor itself said about loss, if it says
}

func (s sample) received() uint64 {
	if s.drops >= s.events {
		return 0
	}
	return s.events - s.drops
}

// perEvent is CPU µs per received event.
func (s sample) perEvent() float64 {
	if s.received() == 0 {
		return 0
	}
	return float64(s.cpu) / 1e3 / float64(s.received())
}

func compare(args []string) int {
	fs := flag.NewFlagSet("forkstat", flag.ContinueOnError)
	runs := fs.Int("runs", 3, "runs of each storm (the table gives medians)")
	attempts := fs.Int("attempts", 0, "give up on a storm after this many attempts swamped by other programs (default 3 × runs)")
	storms := fs.String("storms", "fork:20000,threads:20000,exec:6000", "storms to run, as kind:count (kinds: fork, threads, exec)")
	program := fs.String("program", "/bin/true", "the program the exec storm runs")
	procmon := fs.String("procmon", "", "procmon binary (default: built from ../examples/procmon)")
	pmArgs := fs.String("procmon-args", "", "more arguments for both procmon columns, space-separated (\"-doorbell=false\" measures the path of kernels before 6.6)")
	outDir := fs.String("out", "", "directory for the monitors' output files (default: a temporary one, removed)")
	var extra []string
	fs.Func("add", "another monitor to run alongside, as \"NAME=COMMAND ARGS...\" (repeat for several; shown on stderr)", func(s string) error {
		if name, cmd, ok := strings.Cut(s, "="); !ok || name == "" || len(strings.Fields(cmd)) == 0 || strings.Contains(strings.Fields(cmd)[0], "=") {
			return errors.New("want NAME=COMMAND ARGS (the name without '=')")
		}
		extra = append(extra, s)
		return nil
	})
	procReads := fs.Bool("procreads", false, "instead: the CPU time of one open, read and close of each /proc/<pid> file procmon reads, on a process of this machine (this one's parent)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *procReads {
		return measureProcReads(os.Getppid())
	}
	if _, err := exec.LookPath("forkstat"); err != nil {
		fmt.Fprintln(os.Stderr, "forkstat comparison: forkstat is not installed (Debian: apt-get install forkstat)")
		return 1
	}
	dir := *outDir
	if dir == "" {
		d, err := os.MkdirTemp("", "forkstat-cmp")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(d)
		dir = d
	}
	pm := *procmon
	if pm == "" {
		pm = filepath.Join(dir, "procmon")
		b := exec.Command("go", "build", "-o", pm, "github.com/cnlink/connector/examples/procmon")
		b.Stderr = os.Stderr
		if err := b.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building procmon:", err)
			return 1
		}
	}
	more := strings.Fields(*pmArgs)
	monitors := []monitor{
		{"forkstat", []string{"forkstat"}},
		{"procmon", append([]string{pm}, more...)},
		{"procmon -json", append([]string{pm, "-json"}, more...)},
	}
	if len(more) > 0 {
		fmt.Fprintf(os.Stderr, "procmon runs as %q, procmon -json as %q\n", monitors[1].argv, monitors[2].argv)
	}
	for _, e := range extra {
		name, cmd, _ := strings.Cut(e, "=")
		monitors = append(monitors, monitor{name, strings.Fields(cmd)})
	}
	type row struct {
		storm   string
		samples [][]sample // per run, per monitor
	}
	var rows []row
	for _, spec := range strings.Split(*storms, ",") {
		kind, count, ok := strings.Cut(spec, ":")
		n, err := strconv.Atoi(count)
		if !ok || err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "bad storm %q: want kind:count\n", spec)
			return 2
		}
		r := row{storm: spec}
		// The storm's own events: fork and exit per task, and the exec.
		want := uint64(2 * n)
		if kind == "exec" {
			want = uint64(3 * n)
		}
		for run, attempt := 1, 1; run <= *runs; attempt++ {
			if attempt > max(*attempts, 3**runs) {
				fmt.Fprintf(os.Stderr, "forkstat comparison: %s: other programs' process events swamped %d attempts; measure on a quieter machine\n", spec, attempt-1)
				return 1
			}
			ss, err := measure(monitors, kind, n, *program, dir)
			if err != nil {
				fmt.Fprintln(os.Stderr, "forkstat comparison:", err)
				return 1
			}
			if ss[0].events > want+want/5+1000 {
				// Another program's storm ran meanwhile: the monitors
				// measured that, not this storm. Try again.
				fmt.Fprintf(os.Stderr, "%-14s attempt %d: %d process events on the machine for the storm's %d: busy, not counted\n", spec, attempt, ss[0].events, want)
				continue
			}
			if i := slices.IndexFunc(ss, func(s sample) bool { return s.drops > s.events/2 }); i >= 0 {
				// Over half dropped (even more than the events, when
				// another program floods the kernel with subscription
				// requests, whose acknowledgements reach unfiltered
				// sockets): the run measured an overload. Try again.
				fmt.Fprintf(os.Stderr, "%-14s attempt %d: %s dropped %d of %d events: overloaded, not counted\n", spec, attempt, monitors[i].name, ss[i].drops, ss[i].events)
				continue
			}
			run++
			for i, m := range monitors {
				s := ss[i]
				fmt.Fprintf(os.Stderr, "%-14s run %d %-14s %7d events %6d dropped  cpu %8.1f ms  %6.2f µs/event  %s\n",
					spec, run-1, m.name, s.events, s.drops, float64(s.cpu)/1e6, s.perEvent(), s.lost)
			}
			r.samples = append(r.samples, ss)
		}
		rows = append(rows, r)
	}

	fmt.Printf("| storm | events per run (median) | forkstat µs/event | procmon µs/event | procmon -json µs/event | procmon ÷ forkstat | procmon -json ÷ forkstat | events dropped (forkstat, procmon, procmon -json) |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		var ev []float64
		per := make([][]float64, len(monitors))
		ratio := make([][]float64, len(monitors))
		drops := make([]uint64, len(monitors))
		for _, ss := range r.samples {
			ev = append(ev, float64(ss[0].events))
			for i := range monitors {
				per[i] = append(per[i], ss[i].perEvent())
				if f := ss[0].perEvent(); f > 0 {
					ratio[i] = append(ratio[i], ss[i].perEvent()/f)
				}
				drops[i] += ss[i].drops
			}
		}
		fmt.Printf("| %s | %.0f | %.2f | %.2f | %.2f | **%.2f** | **%.2f** | %d, %d, %d |\n",
			r.storm, median(ev), median(per[0]), median(per[1]), median(per[2]), median(ratio[1]), median(ratio[2]), drops[0], drops[1], drops[2])
	}
	return 0
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// measure runs the monitors side by side through one storm.
func measure(monitors []monitor, kind string, n int, program, dir string) ([]sample, error) {
	cmds := make([]*exec.Cmd, len(monitors))
	stderrs := make([]string, len(monitors))
	defer func() {
		for _, c := range cmds {
			if c != nil && c.ProcessState == nil {
				_ = c.Process.Kill()
				_ = c.Wait()
			}
		}
	}()
	for i, m := range monitors {
		name := strings.ReplaceAll(m.name, " ", "")
		out, err := os.Create(filepath.Join(dir, name+".out"))
		if err != nil {
			return nil, err
		}
		defer out.Close()
		stderrs[i] = filepath.Join(dir, name+".err")
		errf, err := os.Create(stderrs[i])
		if err != nil {
			return nil, err
		}
		defer errf.Close()
		c := exec.Command(m.argv[0], m.argv[1:]...)
		c.Stdout, c.Stderr = out, errf
		if err := c.Start(); err != nil {
			return nil, fmt.Errorf("%s: %w", m.name, err)
		}
		cmds[i] = c
	}
	for i, c := range cmds {
		if err := waitSocket(c.Process.Pid, 10*time.Second); err != nil {
			return nil, fmt.Errorf("%s: %w", monitors[i].name, err)
		}
	}
	time.Sleep(500 * time.Millisecond) // subscriptions sent, start-up work done

	l, err := proc.Listen(&proc.Config{ReadBufferSize: 64 << 20})
	if err != nil {
		return nil, fmt.Errorf("counting listener: %w", err)
	}
	var counted atomic.Uint64
	var wg sync.WaitGroup
	wg.Go(func() {
		var ev proc.Event
		for {
			if err := l.Next(&ev); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, os.ErrClosed) {
					return
				}
				if strings.Contains(err.Error(), "closed") {
					return
				}
				continue
			}
			if ev.Kind == proc.KindLost {
				counted.Add(uint64(ev.Lost))
				continue
			}
			counted.Add(1)
		}
	})
	ss := make([]sample, len(monitors))
	cpu0 := make([]time.Duration, len(monitors))
	drops0 := make([]uint64, len(monitors))
	for i, c := range cmds {
		if cpu0[i], err = procCPU(c.Process.Pid); err != nil {
			return nil, err
		}
		drops0[i], _ = netlinkDrops(c.Process.Pid)
	}
	counted.Store(0)

	self, _ := os.Executable()
	storm := exec.Command(self)
	storm.Env = append(os.Environ(), stormEnv+"="+kind+":"+strconv.Itoa(n)+":"+program)
	storm.Stderr = os.Stderr
	out, err := storm.Output()
	if err != nil {
		return nil, fmt.Errorf("storm %s:%d: %w", kind, n, err)
	}
	if made, _ := strconv.Atoi(strings.TrimSpace(string(out))); made != n {
		return nil, fmt.Errorf("storm %s:%d made %s tasks", kind, n, strings.TrimSpace(string(out)))
	}

	// Let the monitors drain their queues: until their CPU time stops
	// growing (less than 1 ms in 200 ms).
	last := slices.Clone(cpu0)
	for round := 0; round < 150; round++ {
		time.Sleep(200 * time.Millisecond)
		busy := false
		for i, c := range cmds {
			now, err := procCPU(c.Process.Pid)
			if err != nil {
				return nil, err
			}
			if now-last[i] >= time.Millisecond {
				busy = true
			}
			last[i] = now
		}
		if !busy {
			break
		}
	}
	_ = l.SetDeadline(time.Now())
	wg.Wait()
	l.Close()
	events := counted.Load()
	for i, c := range cmds {
		d, _ := netlinkDrops(c.Process.Pid)
		ss[i] = sample{cpu: last[i] - cpu0[i], events: events, drops: d - drops0[i]}
		_ = c.Process.Signal(os.Interrupt)
	}
	for i, c := range cmds {
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
		if b, err := os.ReadFile(stderrs[i]); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if _, rest, ok := strings.Cut(line, " received, "); ok {
					ss[i].lost = strings.SplitN(rest, " (", 2)[0]
				}
			}
		}
	}
	return ss, nil
}

// measureProcReads prints the CPU time (getrusage, user + system) of one
// open, read and close of each /proc/<pid> file procmon may read.
func measureProcReads(pid int) int {
	buf := make([]byte, 4097)
	const n = 20000
	for _, f := range []string{"cmdline", "comm", "cgroup", "stat", "status"} {
		p := "/proc/" + strconv.Itoa(pid) + "/" + f
		c0 := selfCPU()
		for range n {
			fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			_, _ = unix.Read(fd, buf)
			unix.Close(fd)
		}
		fmt.Printf("%-8s %5.2f µs CPU per open+read+close\n", f, float64(selfCPU()-c0)/1e3/n)
	}
	return 0
}

func selfCPU() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU returns the CPU time (user + system) a process has used so far,
// from its process CPU-time clock (clock_getcpuclockid(3)), the same
// account getrusage(2) reports, in nanoseconds.
func procCPU(pid int) (time.Duration, error) {
	clock := int32(^uint32(pid)<<3 | 2) // CPUCLOCK_SCHED of the whole process
	var ts unix.Timespec
	if err := unix.ClockGettime(clock, &ts); err != nil {
		return 0, fmt.Errorf("reading the CPU clock of process %d: %w", pid, err)
	}
	return time.Duration(ts.Nano()), nil
}

func waitSocket(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, ok := netlinkDrops(pid); ok {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("monitor %d opened no connector socket in group 1 within %v", pid, timeout)
}

// netlinkDrops returns the drop counter of another process's connector
// socket in group 1, whose port id is its pid, from /proc/net/netlink. (The
// library reads its own sockets' counters with SO_MEMINFO; another
// process's socket is only visible here.)
func netlinkDrops(pid int) (uint64, bool) {
	f, err := os.Open("/proc/net/netlink")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	return findNetlink(f, pid)
}

// findNetlink parses /proc/net/netlink (net/netlink/af_netlink.c,
// netlink_seq_show: sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode).
func findNetlink(r io.Reader, pid int) (uint64, bool) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 9 || f[1] != "11" || f[2] != strconv.Itoa(pid) {
			continue
		}
		groups, err := strconv.ParseUint(f[3], 16, 32)
		if err != nil || groups&1 == 0 {
			continue
		}
		d, err := strconv.ParseUint(f[8], 10, 64)
		if err != nil {
			continue
		}
		return d, true
	}
	return 0, false
}
