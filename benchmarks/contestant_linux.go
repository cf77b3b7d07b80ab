//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A receiver is one contestant's way of reading proc events.
type receiver interface {
	// start opens the socket, applies the options and subscribes. The
	// subscription is in force when start returns: the kernel handles
	// LISTEN synchronously inside the send.
	start(o *recvOpts, t *tally) error
	// run receives until stop is called, counting into the tally.
	run() error
	// stop unsubscribes (where the library can) and makes run return.
	stop()
	// rcvbuf reports the receive buffer size the kernel applied.
	rcvbuf() int
}

// recvOpts are a contestant's settings, from its command line.
type recvOpts struct {
	name       string
	stormPid   uint32
	rcvbuf     int  // bytes asked for with SO_RCVBUFFORCE; 0 = rmem_default
	noENOBUFS  bool // NETLINK_NO_ENOBUFS
	batch      int  // datagrams per recvmmsg, where the receiver batches
	msgbuf     int  // bytes per datagram buffer
	expect     uint64
	quiet      time.Duration
	limit      time.Duration
	cpuprofile string
}

var receivers = map[string]func() receiver{}

// contestantResult is what a contestant process reports, as one JSON line.
type contestantResult struct {
	Name     string `json:"name"`
	Events   uint64 `json:"events"`   // proc events decoded in the window
	Storm    uint64 `json:"storm"`    // storm events among them
	Expect   uint64 `json:"expect"`   // storm events the storm produced
	ENOBUFS  uint64 `json:"enobufs"`  // overruns reported
	Restarts uint64 `json:"restarts"` // monitor restarts (vishvananda dies on ENOBUFS)
	Other    uint64 `json:"other"`    // non-event messages (ACKs, foreign, short)
	// EndEvents is Events at the moment the last expected storm event was
	// counted, EndNs that moment (CLOCK_MONOTONIC), 0 if it never came.
	EndEvents uint64 `json:"end_events"`
	EndNs     int64  `json:"end_ns"`
	// EndCPUNs is the CPU time used from the start of the window to EndNs.
	EndCPUNs int64 `json:"end_cpu_ns"`
	// FirstNs is when the first storm event was counted, FirstEvents the
	// events counted before it.
	FirstNs     int64  `json:"first_ns"`
	FirstEvents uint64 `json:"first_events"`
	UserNs      int64  `json:"user_ns"` // CPU time in the window
	SysNs       int64  `json:"sys_ns"`
	Mallocs     uint64 `json:"mallocs"` // heap allocations in the window
	Bytes       uint64 `json:"bytes"`   // heap bytes allocated in the window
	MaxRSSKB    int64  `json:"maxrss_kb"`
	VmHWMKB     int64  `json:"vmhwm_kb"`
	RcvBuf      int    `json:"rcvbuf"`
	Err         string `json:"err,omitempty"`
}

func contestantMain(args []string) error {
	fs := flag.NewFlagSet("contestant", flag.ContinueOnError)
	var o recvOpts
	var storm uint64
	fs.StringVar(&o.name, "name", "", "receiver")
	fs.Uint64Var(&storm, "storm-pid", 0, "pid of the storm process")
	fs.IntVar(&o.rcvbuf, "rcvbuf", 0, "receive buffer bytes")
	fs.BoolVar(&o.noENOBUFS, "no-enobufs", false, "set NETLINK_NO_ENOBUFS")
	fs.IntVar(&o.batch, "batch", 16, "datagrams per recvmmsg")
	fs.IntVar(&o.msgbuf, "msgbuf", 32<<10, "bytes per datagram buffer")
	fs.Uint64Var(&o.expect, "expect", 0, "storm events to wait for (drain mode)")
	fs.DurationVar(&o.quiet, "quiet", 300*time.Millisecond, "stop after this long without a storm event once the count is known")
	fs.DurationVar(&o.limit, "limit", 2*time.Minute, "hard limit on the contestant's life")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the receive window here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.stormPid = uint32(storm)
	mk, ok := receivers[o.name]
	if !ok {
		return fmt.Errorf("unknown receiver %q", o.name)
	}
	r := mk()
	t := &tally{stormPid: o.stormPid}
	t.expect.Store(o.expect)
	if err := r.start(&o, t); err != nil {
		return fmt.Errorf("%s: start: %w", o.name, err)
	}

	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	// Set up everything the control loop needs before the measurement
	// window opens, so that the window holds the receive loop's own
	// allocations and as little else as possible.
	rcvbuf := r.rcvbuf()
	done := make(chan error, 1)
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	hard := time.NewTimer(o.limit)
	// Quiet is counted in ticks, not wall time, so that time spent stopped
	// (SIGSTOP, drain mode) does not count as quiet.
	const tickEvery = 10 * time.Millisecond
	tick := time.NewTicker(tickEvery)
	fmt.Printf("ready %d\n", rcvbuf)

	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	var ru0 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	cpu0 := tvNs(ru0.Utime) + tvNs(ru0.Stime)
	go func() { done <- r.run() }()

	// Control: wait for the expected count (from the command line or a
	// later "expect N" line), then for the storm events to arrive or stop
	// arriving, then stop the receiver.
	var runErr error
	last, idle := t.storm.Load(), time.Duration(0)
	// Quiet counts once the storm is over (an "expect" line) or, in drain
	// mode, once its events have started to arrive.
	armed := false
	stopped := false
loop:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				lines = nil
				if t.expect.Load() == 0 {
					break loop // the suite went away or wants us gone
				}
				continue
			}
			if n, found := strings.CutPrefix(l, "expect "); found {
				v, err := strconv.ParseUint(n, 10, 64)
				if err == nil {
					t.expect.Store(v)
					armed = true
					if t.storm.Load() >= v && t.endNs.Load() == 0 {
						t.endNs.Store(monoNow())
					}
				}
			}
			if l == "stop" {
				break loop
			}
		case <-tick.C:
			n := t.storm.Load()
			if n != last {
				last, idle, armed = n, 0, true
			} else if armed {
				idle += tickEvery
			}
			if e := t.expect.Load(); e != 0 && (n >= e || idle > o.quiet) {
				break loop
			}
		case runErr = <-done:
			stopped = true
			break loop
		case <-hard.C:
			runErr = errors.New("hard time limit reached")
			break loop
		}
	}
	if !stopped {
		r.stop()
		if err := <-done; runErr == nil {
			runErr = err
		}
	}
	var ru1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	if o.cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	res := contestantResult{
		Name:        o.name,
		Events:      t.events,
		Storm:       t.storm.Load(),
		Expect:      t.expect.Load(),
		ENOBUFS:     t.enobufs.Load(),
		Restarts:    t.restarts,
		Other:       t.other.Load(),
		EndEvents:   t.endEvents,
		EndNs:       t.endNs.Load(),
		EndCPUNs:    max(t.endCPUNs-cpu0, 0),
		FirstNs:     t.firstNs,
		FirstEvents: t.firstEvents,
		UserNs:      tvNs(ru1.Utime) - tvNs(ru0.Utime),
		SysNs:       tvNs(ru1.Stime) - tvNs(ru0.Stime),
		Mallocs:     ms1.Mallocs - ms0.Mallocs,
		Bytes:       ms1.TotalAlloc - ms0.TotalAlloc,
		MaxRSSKB:    int64(ru1.Maxrss), // int32 on 32-bit systems
		VmHWMKB:     vmHWM(),
		RcvBuf:      rcvbuf,
	}
	if runErr != nil {
		res.Err = runErr.Error()
	}
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	fmt.Printf("result %s\n", b)
	return nil
}

// tvNs converts tv to nanoseconds (Timeval's fields are 32-bit on 32-bit
// systems, so the conversion must widen first: Timeval.Nano does).
func tvNs(tv unix.Timeval) int64 { return tv.Nano() }

// vmHWM returns the process's peak resident set in KiB from /proc/self/status.
func vmHWM() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}
