//go:build linux

package main

// procmon compare measures the CPU time that process monitors (procmon in
// several modes, forkstat, and any other given with -add) spend per event,
// running them side by side under the same storm of short-lived processes
// or threads. It is a benchmark for people, not a test; see
// examples/README.md for the method and results.

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/proc"
	"golang.org/x/sys/unix"
)

type monitorConfig struct {
	name     string
	argv     []string
	optional bool // measured only when named in -only
}

type sample struct {
	events   uint64        // events the kernel reported during the storm
	spawned  uint64        // processes the storm started
	cpu      time.Duration // the monitor's CPU time during the storm and its drain
	startCPU time.Duration // the monitor's CPU time before the storm
	drops    uint64        // messages the kernel dropped for the monitor's socket during the storm
	wall     time.Duration
}

func compareMain(args []string) int {
	fs := flag.NewFlagSet("procmon compare", flag.ContinueOnError)
	runs := fs.Int("runs", 5, "measurements per monitor")
	secs := fs.Duration("storm", 5*time.Second, "length of each process storm")
	workers := fs.Int("workers", runtime.NumCPU(), "goroutines making the storm")
	cmdName := fs.String("cmd", "true", "the short-lived program the storm runs (found in PATH)")
	var envs listFlag
	fs.Var(&envs, "env", "KEY=VALUE to add to the monitors' environment, e.g. GOMAXPROCS=1 (repeat for several)")
	threads := fs.Bool("threads", false, "storm of threads (created and ended in this process) instead of processes")
	rate := fs.Int("rate", 0, "process storm: processes per second to start (0: as many as the workers can)")
	only := fs.String("only", "", "comma-separated names of the monitors to run (default: forkstat, forkstat -x, and procmon in its main modes)")
	var extra listFlag
	fs.Var(&extra, "add", "another monitor to measure, as \"NAME=COMMAND ARGS...\" (repeat for several)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: procmon compare [flags]\n\nMeasure the CPU time per event of procmon and forkstat under a storm of\nprocesses or threads. Needs forkstat in PATH and the right to subscribe to\nprocess events.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "procmon compare:", err)
		return 1
	}
	cmdPath, err := exec.LookPath(*cmdName)
	if err != nil {
		fmt.Fprintln(os.Stderr, "procmon compare: storm program:", err)
		return 1
	}
	configs := []monitorConfig{
		{"forkstat", []string{"forkstat"}, false},
		{"forkstat -x", []string{"forkstat", "-x"}, false},
		{"procmon", []string{self}, false},
		{"procmon -json", []string{self, "-json"}, false},
		{"procmon -cgroup=false", []string{self, "-cgroup=false"}, false},
		{"procmon -coalesce 5ms", []string{self, "-coalesce", "5ms"}, false},
		// procmon following an empty subtree reads no /proc files and
		// prints nothing, which isolates the cost of receiving and
		// decoding events.
		{"procmon -p 999999999", []string{self, "-p", "999999999"}, true},
		{"procmon -p 999999999 -coalesce 5ms", []string{self, "-p", "999999999", "-coalesce", "5ms"}, true},
		{"procmon -json -coalesce 5ms", []string{self, "-json", "-coalesce", "5ms"}, true},
	}
	for _, e := range extra {
		name, command, ok := strings.Cut(e, "=")
		if !ok || len(strings.Fields(command)) == 0 {
			fmt.Fprintf(os.Stderr, "procmon compare: bad -add %q: want NAME=COMMAND ARGS...\n", e)
			return 2
		}
		configs = append(configs, monitorConfig{name, strings.Fields(command), false})
	}
	var keep []monitorConfig
	for _, c := range configs {
		if (*only == "" && !c.optional) || slices.Contains(strings.Split(*only, ","), c.name) {
			keep = append(keep, c)
		}
	}
	configs = keep
	if len(configs) == 0 {
		fmt.Fprintf(os.Stderr, "procmon compare: -only %q names no monitor\n", *only)
		return 2
	}
	for _, c := range configs {
		if c.argv[0] == "forkstat" {
			if _, err := exec.LookPath("forkstat"); err != nil {
				fmt.Fprintln(os.Stderr, "procmon compare: forkstat is not installed (Debian: apt-get install forkstat), or use -only procmon,\"procmon -json\"")
				return 1
			}
		}
	}

	results := make(map[string][]sample)
	for run := 0; run < *runs; run++ {
		ss, err := measure(configs, cmdPath, *secs, *workers, *rate, *threads, envs)
		if err != nil {
			fmt.Fprintf(os.Stderr, "procmon compare: %v\n", err)
			return 1
		}
		for i, c := range configs {
			s := ss[i]
			fmt.Fprintf(os.Stderr, "run %d %-22s %8d events %7.0f/s  dropped %7d  cpu %8.1fms  %6.2f µs per received event\n",
				run+1, c.name, s.events, float64(s.events)/s.wall.Seconds(), s.drops, ms(s.cpu), perEvent(s))
			results[c.name] = append(results[c.name], s)
		}
	}

	// A run in which the machine had far more process events than the
	// storm makes (another program's storm) measures something else: its
	// results are shown apart.
	var quiet, busy []int
	for run := 0; run < *runs; run++ {
		s := results[configs[0].name][run]
		if s.events > 2*3*s.spawned+1000 {
			busy = append(busy, run)
		} else {
			quiet = append(quiet, run)
		}
	}
	table := func(title string, runs []int) {
		if len(runs) == 0 {
			return
		}
		fmt.Printf("\n%s\n\n", title)
		fmt.Printf("| monitor | runs | events/s (median) | dropped by the kernel (median) | CPU ms per run (median) | µs CPU per received event: median | min | max |\n")
		fmt.Printf("|---|---|---|---|---|---|---|---|\n")
		for _, c := range configs {
			var rate, dropped, cpu, per []float64
			for _, run := range runs {
				s := results[c.name][run]
				rate = append(rate, float64(s.events)/s.wall.Seconds())
				dropped = append(dropped, 100*float64(s.events-s.handled())/float64(max(s.events, 1)))
				cpu = append(cpu, ms(s.cpu))
				per = append(per, perEvent(s))
			}
			fmt.Printf("| `%s` | %d | %.0f | %.1f%% | %.1f | **%.2f** | %.2f | %.2f |\n",
				c.name, len(runs), median(rate), median(dropped), median(cpu), median(per), slices.Min(per), slices.Max(per))
		}
	}
	table("Runs with only the storm's processes:", quiet)
	table("Runs during which other programs caused many more process events (a busy machine):", busy)
	return 0
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// handled is the number of events the monitor received: those the kernel
// did not drop for it.
func (s sample) handled() uint64 {
	if s.drops >= s.events {
		return 0
	}
	return s.events - s.drops
}

// perEvent is the monitor's CPU time per event it received, in µs.
func perEvent(s sample) float64 {
	if s.handled() == 0 {
		return 0
	}
	return float64(s.cpu) / 1e3 / float64(s.handled())
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

// measure runs the monitors side by side through one storm, so that they
// see the same events under the same conditions (other load on the machine
// included), and returns a sample for each.
func measure(configs []monitorConfig, cmdPath string, storm time.Duration, workers, rate int, threads bool, env []string) ([]sample, error) {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	cmds := make([]*exec.Cmd, len(configs))
	defer func() {
		for _, cmd := range cmds {
			if cmd != nil && cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
		}
	}()
	for i, c := range configs {
		cmd := exec.Command(c.argv[0], c.argv[1:]...)
		cmd.Stdout = devnull
		cmd.Stderr = devnull
		cmd.Env = append(os.Environ(), env...)
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
		cmds[i] = cmd
	}
	// Ready when each has its connector socket bound to group 1; then
	// give them a moment to send their subscriptions.
	for i, cmd := range cmds {
		if err := waitSocket(cmd.Process.Pid, 10*time.Second); err != nil {
			return nil, fmt.Errorf("%s: %w", configs[i].name, err)
		}
	}
	time.Sleep(500 * time.Millisecond)

	// Count the storm's events with a listener of our own.
	l, err := proc.Listen(&proc.Config{ReadBufferSize: 64 << 20})
	if err != nil {
		return nil, fmt.Errorf("counting listener: %w", err)
	}
	defer l.Close()
	var counted atomic.Uint64
	var cwg sync.WaitGroup
	cwg.Add(1)
	go func() {
		defer cwg.Done()
		var ev proc.Event
		for {
			if err := l.Next(&ev); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) || isClosed(err) {
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
	}()

	ss := make([]sample, len(configs))
	drops0 := make([]uint64, len(configs))
	for i, cmd := range cmds {
		if ss[i].startCPU, err = procCPU(cmd.Process.Pid); err != nil {
			return nil, err
		}
		drops0[i] = socketDrops(cmd.Process.Pid)
	}
	counted.Store(0)
	begin := time.Now()
	var spawned uint64
	if threads {
		spawned = runThreadStorm(storm, workers)
	} else {
		spawned = runStorm(cmdPath, storm, workers, rate)
	}
	wall := time.Since(begin)

	// Let the monitors drain their queues: wait until their CPU time stops
	// growing (less than 1ms in 200ms).
	last := make([]time.Duration, len(cmds))
	for i := range cmds {
		last[i] = ss[i].startCPU
	}
	for round := 0; round < 100; round++ {
		time.Sleep(200 * time.Millisecond)
		busy := false
		for i, cmd := range cmds {
			now, err := procCPU(cmd.Process.Pid)
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
	cwg.Wait()
	events := counted.Load()
	for i, cmd := range cmds {
		ss[i].cpu = last[i] - ss[i].startCPU
		ss[i].events, ss[i].spawned, ss[i].wall = events, spawned, wall
		ss[i].drops = socketDrops(cmd.Process.Pid) - drops0[i]
		_ = cmd.Process.Signal(os.Interrupt)
	}
	for _, cmd := range cmds {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	return ss, nil
}

// runThreadStorm creates and ends threads for the given time and returns
// how many: a goroutine that locks itself to its thread and returns takes
// the thread with it, and the next one needs a new thread. Each is a fork
// (clone) event and an exit event; the monitors see a thread storm, as from
// a busy thread-per-request server.
func runThreadStorm(storm time.Duration, workers int) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), storm)
	defer cancel()
	var n atomic.Uint64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				done := make(chan struct{})
				go func() {
					runtime.LockOSThread()
					close(done)
				}()
				<-done
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return n.Load()
}

// runStorm starts short-lived processes for the given time, from the given
// number of goroutines, at most rate per second if rate > 0, and returns
// how many it started.
func runStorm(cmdPath string, storm time.Duration, workers, rate int) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), storm)
	defer cancel()
	var spawned atomic.Uint64
	var tokens chan struct{}
	if rate > 0 {
		tokens = make(chan struct{}, rate)
		go func() {
			interval := time.Second / time.Duration(rate)
			next := time.Now()
			for ctx.Err() == nil {
				next = next.Add(interval)
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
				select {
				case tokens <- struct{}{}:
				default: // the workers fall behind: skip
				}
			}
		}()
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if tokens != nil {
					select {
					case <-tokens:
					case <-ctx.Done():
						return
					}
				}
				// syscall.ForkExec and Wait4 rather than os/exec:
				// no pipes or goroutines, so the storm is faster.
				pid, err := syscall.ForkExec(cmdPath, []string{cmdPath}, &syscall.ProcAttr{})
				if err != nil {
					continue
				}
				var ws syscall.WaitStatus
				if _, err := syscall.Wait4(pid, &ws, 0, nil); err == nil {
					spawned.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return spawned.Load()
}

func isClosed(err error) bool { return errors.Is(err, connector.ErrClosed) }

// procCPU returns the CPU time a process has used so far, from its process
// CPU-time clock (clock_getcpuclockid(3): CPUCLOCK_SCHED of the whole
// process), which counts in nanoseconds.
func procCPU(pid int) (time.Duration, error) {
	clock := int32(^uint32(pid)<<3 | 2)
	var ts unix.Timespec
	if err := unix.ClockGettime(clock, &ts); err != nil {
		return 0, fmt.Errorf("reading the CPU clock of process %d: %w", pid, err)
	}
	return time.Duration(ts.Nano()), nil
}

// waitSocket waits until the process has a NETLINK_CONNECTOR socket in
// group 1 (its first socket's port id is its pid).
func waitSocket(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, ok := netlinkSocket(pid); ok {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("monitor %d opened no connector socket within %v", pid, timeout)
}

func socketDrops(pid int) uint64 {
	d, _ := netlinkSocket(pid)
	return d
}

// netlinkSocket finds the connector socket with port id pid in
// /proc/net/netlink (columns: sk Eth Pid Groups Rmem Wmem Dump Locks Drops
// Inode) and returns its drop counter.
func netlinkSocket(pid int) (uint64, bool) {
	f, err := os.Open("/proc/net/netlink")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	return findNetlink(f, pid)
}

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
		d, _ := strconv.ParseUint(f[8], 10, 64)
		return d, true
	}
	return 0, false
}
