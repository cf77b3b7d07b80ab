//go:build linux

package main

// procmon compare measures the CPU time that process monitors spend per
// event under the same process storm: procmon (text and JSON) and forkstat.
// It is a benchmark for people, not a test; see examples/README.md.

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
	"time"

	"github.com/cnlink/connector/proc"
	"golang.org/x/sys/unix"
)

type monitorConfig struct {
	name string
	argv []string // argv[0] "" means this binary
}

type sample struct {
	events   uint64        // events the kernel reported during the storm
	spawned  uint64        // processes the storm started
	cpu      time.Duration // the monitor's CPU time during the storm and its drain
	startCPU time.Duration // the monitor's CPU time before the storm
	drops    uint64        // the monitor socket's kernel drop counter
	wall     time.Duration
}

func compareMain(args []string) int {
	fs := flag.NewFlagSet("procmon compare", flag.ContinueOnError)
	runs := fs.Int("runs", 5, "measurements per monitor")
	secs := fs.Duration("storm", 5*time.Second, "length of each process storm")
	workers := fs.Int("workers", runtime.NumCPU(), "goroutines spawning processes in the storm")
	cmdName := fs.String("cmd", "true", "the short-lived program the storm runs (found in PATH)")
	var envs listFlag
	fs.Var(&envs, "env", "KEY=VALUE to add to the monitors' environment, e.g. GOMAXPROCS=1 (repeat for several)")
	rate := fs.Int("rate", 0, "processes per second to start (0: as many as the workers can)")
	only := fs.String("only", "", "comma-separated monitor names to run (default: all)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: procmon compare [flags]\n\nMeasure the CPU time per event of procmon and forkstat under a process storm.\nNeeds forkstat in PATH and the right to subscribe to process events.\n\n")
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
		{"forkstat", []string{"forkstat"}},
		{"forkstat -x", []string{"forkstat", "-x"}},
		{"procmon", []string{self}},
		{"procmon -json", []string{self, "-json"}},
		// Not in the default set: procmon following an empty subtree
		// reads no /proc files and prints nothing, which isolates the
		// cost of receiving and decoding events.
		{"procmon -p 999999999", []string{self, "-p", "999999999"}},
		{"procmon -p 999999999 -coalesce 0", []string{self, "-p", "999999999", "-coalesce", "0"}},
		{"procmon -p 999999999 -coalesce 10ms", []string{self, "-p", "999999999", "-coalesce", "10ms"}},
	}
	if *only == "" {
		configs = configs[:4]
	} else {
		var keep []monitorConfig
		for _, c := range configs {
			if slices.Contains(strings.Split(*only, ","), c.name) {
				keep = append(keep, c)
			}
		}
		configs = keep
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
		// Rotate the order so no monitor always runs first.
		for i := range configs {
			c := configs[(i+run)%len(configs)]
			s, err := measure(c, cmdPath, *secs, *workers, *rate, envs)
			if err != nil {
				fmt.Fprintf(os.Stderr, "procmon compare: %s: %v\n", c.name, err)
				return 1
			}
			fmt.Fprintf(os.Stderr, "run %d %-14s %8d events %7.0f/s  dropped %7d  cpu %8.1fms  %6.2f µs per received event\n",
				run+1, c.name, s.events, float64(s.events)/s.wall.Seconds(), s.drops, ms(s.cpu), perEvent(s))
			results[c.name] = append(results[c.name], s)
		}
	}

	fmt.Printf("\n| monitor | runs | events/s (median) | events dropped by the kernel (median) | CPU ms per run (median) | µs CPU per received event: median | min | max |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|\n")
	for _, c := range configs {
		ss := results[c.name]
		var rate, dropped, cpu, per []float64
		for _, s := range ss {
			rate = append(rate, float64(s.events)/s.wall.Seconds())
			dropped = append(dropped, 100*float64(s.events-s.handled())/float64(max(s.events, 1)))
			cpu = append(cpu, ms(s.cpu))
			per = append(per, perEvent(s))
		}
		fmt.Printf("| `%s` | %d | %.0f | %.1f%% | %.1f | **%.2f** | %.2f | %.2f |\n",
			c.name, len(ss), median(rate), median(dropped), median(cpu), median(per), slices.Min(per), slices.Max(per))
	}
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

// measure runs one monitor through one storm.
func measure(c monitorConfig, cmdPath string, storm time.Duration, workers, rate int, env []string) (sample, error) {
	var s sample
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return s, err
	}
	defer devnull.Close()
	cmd := exec.Command(c.argv[0], c.argv[1:]...)
	cmd.Stdout = devnull
	cmd.Stderr = devnull
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		return s, err
	}
	pid := cmd.Process.Pid
	stopped := false
	defer func() {
		if !stopped {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	// Ready when its connector socket is bound to group 1; then give it
	// a moment to send its subscription.
	if err := waitSocket(pid, 10*time.Second); err != nil {
		return s, err
	}
	time.Sleep(300 * time.Millisecond)

	// Count the storm's events with a listener of our own.
	l, err := proc.Listen(&proc.Config{ReadBufferSize: 32 << 20})
	if err != nil {
		return s, fmt.Errorf("counting listener: %w", err)
	}
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

	s.startCPU, err = procCPU(pid)
	if err != nil {
		return s, err
	}
	begin := time.Now()
	counted.Store(0)
	ctx, cancel := context.WithTimeout(context.Background(), storm)
	var spawned atomic.Uint64
	var wg sync.WaitGroup
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
				if err := exec.Command(cmdPath).Run(); err == nil {
					spawned.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	s.wall = time.Since(begin)
	s.spawned = spawned.Load()

	// Let the monitor drain its queue: wait until its CPU time stops
	// growing (less than 1ms in 200ms).
	last, err := procCPU(pid)
	if err != nil {
		return s, err
	}
	for i := 0; i < 100; i++ {
		time.Sleep(200 * time.Millisecond)
		now, err := procCPU(pid)
		if err != nil {
			return s, err
		}
		if now-last < time.Millisecond {
			break
		}
		last = now
	}
	s.cpu = last - s.startCPU
	_ = l.SetDeadline(time.Now())
	cwg.Wait()
	s.events = counted.Load()
	l.Close()
	s.drops = socketDrops(pid)

	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	stopped = true
	return s, nil
}

func isClosed(err error) bool {
	var e interface{ Unwrap() error }
	return errors.As(err, &e) && strings.Contains(err.Error(), "closed")
}

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
