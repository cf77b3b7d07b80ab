//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type suiteOpts struct {
	duration    time.Duration
	runs        int
	phases      []string
	contestants []string
	bigbuf      int
	drainEvents int64
	drainBuf    int
	batch       int
	msgbuf      int
	uDuration   time.Duration
	payloads    []int
	timeout     time.Duration
	profile     string
	jsonOut     string
	quiet       bool
	drainRound  int
	drainRounds int

	unicastMixed  bool
	unicastRounds int
	pin           bool
	aloneRate     int64
	loadStart     string
	loadEnd       string
	nice          int
	failures      []string // contestants that failed a measurement
}

// allPhases in the order they run.
var allPhases = []string{"storm", "drain", "drain-alone", "shared", "shared-4m", "shared-noenobufs", "alone", "alone-4m", "unicast"}

// allContestants in table order: the floors first (C, then Go), then this
// library, then the others.
var allContestants = []string{"c-recv", "c-recvmmsg", "go-recvmmsg", "go-recvmmsg-polled", "go-rawsys", "raw", "connector", "connector-kw", "connector-raw", "connector-mux", "connector-receive", "proc", "proc-kw", "proc-raw", "vishvananda", "mdlayher"}

// ratioRef is the row every ratio (the "× ref" columns) is taken against, if
// a set has it; otherwise the raw loop ("raw") is (unicast has no C rows).
var ratioRef = "go-recvmmsg"

func suiteMain(args []string) error {
	_, err := runSuite(args, os.Stdout)
	return err
}

// runSuite runs the suite as the command line says, prints the report to w
// and returns the rows it printed.
func runSuite(args []string, w io.Writer) ([]measure, error) {
	fs := flag.NewFlagSet("benchmarks", flag.ContinueOnError)
	var o suiteOpts
	var phases, contestants, payloads string
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of each live storm")
	fs.IntVar(&o.runs, "runs", 1, "repeat the suite this many times and print medians")
	fs.StringVar(&phases, "phases", strings.Join(allPhases, ","), "phases to run")
	fs.StringVar(&contestants, "contestants", strings.Join(allContestants, ","), "receivers to measure")
	fs.StringVar(&ratioRef, "ref", ratioRef, "the receiver every ratio is taken against (the raw loop where it did not run)")
	fs.Int64Var(&o.aloneRate, "alone-rate", 40000, "pace the storms of the alone phases to this many events/s, so that every receiver gets the same load (0: as fast as it goes)")
	fs.IntVar(&o.bigbuf, "bigbuf", 4<<20, "the large receive buffer (SO_RCVBUFFORCE bytes) of the *-4m phases")
	fs.Int64Var(&o.drainEvents, "drain-events", 100000, "proc events queued for the drain measurement")
	fs.IntVar(&o.drainRounds, "drain-rounds", 3, "drain measurements per run (median)")
	fs.IntVar(&o.nice, "nice", -20, "nice value for the suite and every process it starts, so that other load on the machine disturbs the measurements less (0 leaves it alone)")
	fs.IntVar(&o.drainBuf, "drain-rcvbuf", 64<<20, "receive buffer (SO_RCVBUFFORCE bytes) for the drain measurement")
	fs.IntVar(&o.batch, "batch", 64, "datagrams per recvmmsg for raw, connector and proc (proc.DefaultBatchSize; the go-recvmmsg and c-recvmmsg loops always use 64)")
	fs.IntVar(&o.msgbuf, "msgbuf", 32<<10, "bytes per datagram buffer for raw, connector and proc")
	fs.DurationVar(&o.uDuration, "unicast-duration", time.Second, "length of each unicast run")
	fs.IntVar(&o.unicastRounds, "unicast-rounds", 5, "unicast measurements per payload size and run (median)")
	fs.BoolVar(&o.pin, "pin", true, "pin each unicast sender and receiver to a CPU of its own")
	fs.BoolVar(&o.unicastMixed, "unicast-mixed", true, "also measure raw sender to connector receiver and the reverse, which tell the two sides apart")
	fs.StringVar(&payloads, "payloads", "16,256,4096", "unicast payload sizes")
	fs.DurationVar(&o.timeout, "timeout", 0, "hard limit on the whole suite (0: 25 minutes per run)")
	fs.StringVar(&o.profile, "profile", "", "directory for CPU profiles of the contestants during the drain")
	fs.StringVar(&o.jsonOut, "json", "", "also write every measurement of every run to this file")
	fs.BoolVar(&o.quiet, "q", false, "no progress output")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	o.phases = splitList(phases)
	for _, p := range o.phases {
		if !slices.Contains(allPhases, p) {
			return nil, fmt.Errorf("unknown phase %q (have %s)", p, strings.Join(allPhases, ","))
		}
	}
	for _, c := range splitList(contestants) {
		if _, ok := receivers[c]; !ok && !cContestants[c] {
			if c == "proc" && !procAvailable {
				continue
			}
			return nil, fmt.Errorf("unknown contestant %q", c)
		}
		o.contestants = append(o.contestants, c)
	}
	for _, p := range splitList(payloads) {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 16384-20 {
			return nil, fmt.Errorf("bad payload size %q", p)
		}
		o.payloads = append(o.payloads, n)
	}
	o.runs, o.drainRounds, o.unicastRounds = max(o.runs, 1), max(o.drainRounds, 1), max(o.unicastRounds, 1)
	if o.timeout <= 0 {
		o.timeout = time.Duration(o.runs) * 25 * time.Minute
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the suite needs root: CAP_NET_ADMIN for SO_RCVBUFFORCE and userspace unicast, and the initial namespaces for proc events")
	}
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return nil, err
		}
	}

	if o.nice != 0 {
		renice(os.Getpid(), o.nice)
	}
	o.loadStart = loadAvg()

	// Whatever happens, stop every process the suite started.
	defer removeC()
	defer killAll()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	finished := make(chan struct{})
	defer func() {
		signal.Stop(sigs)
		close(finished)
	}()
	go func() {
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "benchmarks: %v: stopping every process started\n", s)
			killAll()
			removeC()
			os.Exit(1)
		case <-finished:
		}
	}()
	hard := time.AfterFunc(o.timeout, func() {
		fmt.Fprintf(os.Stderr, "benchmarks: the suite ran past -timeout %v: stopping every process started\n", o.timeout)
		killAll()
		removeC()
		os.Exit(2)
	})
	defer hard.Stop()

	var all [][]measure
	for i := 0; i < o.runs; i++ {
		o.progress("run %d of %d", i+1, o.runs)
		ms, err := o.runOnce()
		if err != nil {
			return nil, err
		}
		all = append(all, ms)
	}
	if o.jsonOut != "" {
		b, err := json.MarshalIndent(all, "", "  ")
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(o.jsonOut, b, 0o644); err != nil {
			return nil, err
		}
	}
	o.loadEnd = loadAvg()
	res := medians(all)
	printReport(w, &o, res)
	return res, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func (o *suiteOpts) progress(format string, args ...any) {
	if !o.quiet {
		fmt.Fprintf(os.Stderr, "# "+format+"\n", args...)
	}
}

// A measure is one row of one table in one run.
type measure struct {
	Section string             `json:"section"`
	Row     string             `json:"row"`
	Vals    map[string]float64 `json:"vals"`
	Note    string             `json:"note,omitempty"`
}

func (o *suiteOpts) runOnce() ([]measure, error) {
	var ms []measure
	for _, p := range o.phases {
		var (
			got []measure
			err error
		)
		switch p {
		case "storm":
			o.progress("storm alone, %v", o.duration)
			got, err = o.phaseStorm()
		case "drain":
			var rounds [][]measure
			for i := 0; i < o.drainRounds && err == nil; i++ {
				o.progress("drain round %d of %d: %d events queued in frozen receivers", i+1, o.drainRounds, o.drainEvents)
				var g []measure
				g, err = o.phaseDrain(p, o.contestants)
				rounds = append(rounds, g)
			}
			got = medians(rounds)
		case "drain-alone":
			var rounds [][]measure
			for i := 0; i < o.drainRounds && err == nil; i++ {
				var round []measure
				for _, c := range o.contestants {
					o.progress("drain alone, round %d of %d: %d events queued in %s, frozen", i+1, o.drainRounds, o.drainEvents, c)
					var g []measure
					g, err = o.phaseDrain(p, []string{c})
					round = append(round, g...)
					if err != nil {
						break
					}
				}
				addRatios(round)
				rounds = append(rounds, round)
			}
			got = medians(rounds)
		case "shared":
			o.progress("live storm %v, all receivers at once, default buffer", o.duration)
			got, err = o.phaseLive(p, o.contestants, 0, false, 0)
		case "shared-4m":
			o.progress("live storm %v, all receivers at once, %d-byte buffer", o.duration, o.bigbuf)
			got, err = o.phaseLive(p, o.contestants, o.bigbuf, false, 0)
		case "shared-noenobufs":
			o.progress("live storm %v, all receivers at once, default buffer, NETLINK_NO_ENOBUFS", o.duration)
			got, err = o.phaseLive(p, o.contestants, 0, true, 0)
		case "alone", "alone-4m":
			buf := 0
			if p == "alone-4m" {
				buf = o.bigbuf
			}
			for _, c := range o.contestants {
				o.progress("live storm %v at %d events/s, %s alone, buffer %d", o.duration, o.aloneRate, c, buf)
				g, e := o.phaseLive(p, []string{c}, buf, false, o.aloneRate)
				got, err = append(got, g...), e
				if err != nil {
					break
				}
			}
			addRatios(got)
		case "unicast":
			got, err = o.phaseUnicast()
		}
		if err != nil {
			return ms, fmt.Errorf("phase %s: %w", p, err)
		}
		ms = append(ms, got...)
	}
	return ms, nil
}

func (o *suiteOpts) phaseStorm() ([]measure, error) {
	s, err := startStorm(o.duration, 0, 0)
	if err != nil {
		return nil, err
	}
	r, err := s.run(o.duration + 30*time.Second)
	if err != nil {
		return nil, err
	}
	return []measure{{Section: "storm", Row: "storm alone", Vals: map[string]float64{
		"rate": r.rate(), "events": float64(r.events()), "fails": float64(r.Fails)}}}, nil
}

func (o *suiteOpts) contestantArgs(name string, s *storm, rcvbuf int, noENOBUFS bool, expect uint64) []string {
	args := []string{"-name", name, "-storm-pid", strconv.Itoa(s.pid()), "-rcvbuf", strconv.Itoa(rcvbuf),
		"-batch", strconv.Itoa(o.batch), "-msgbuf", strconv.Itoa(o.msgbuf), "-limit", (o.duration + 2*time.Minute).String()}
	if noENOBUFS {
		args = append(args, "-no-enobufs")
	}
	if expect > 0 {
		args = append(args, "-expect", strconv.FormatUint(expect, 10))
	}
	return args
}

// startContestants starts the receivers and waits until each is subscribed.
func startContestants(names []string, argsFor func(string) []string) ([]*child, error) {
	var cs []*child
	for _, n := range names {
		var c *child
		var err error
		if cContestants[n] {
			var exe string
			if exe, err = cProgram("crecv"); err == nil {
				c, err = spawnExe(exe, n, n, nil, argsFor(n)...)
			}
		} else {
			c, err = spawn(n, n, []string{modeEnv + "=contestant"}, argsFor(n)...)
		}
		if err == nil {
			_, err = c.line("ready", 20*time.Second)
		}
		if err != nil {
			for _, c := range cs {
				c.finish(0)
			}
			return nil, err
		}
		cs = append(cs, c)
	}
	return cs, nil
}

func readResult(c *child, timeout time.Duration) (contestantResult, error) {
	defer c.finish(5 * time.Second)
	l, err := c.line("result ", timeout)
	if err != nil {
		return contestantResult{}, err
	}
	var r contestantResult
	if err := json.Unmarshal([]byte(l), &r); err != nil {
		return r, fmt.Errorf("%s result: %w", c.name, err)
	}
	if r.Err != "" {
		return r, fmt.Errorf("%s: %s", c.name, r.Err)
	}
	return r, nil
}

// phaseLive runs one storm of o.duration, paced to rate events/s if rate > 0,
// with the given receivers subscribed.
func (o *suiteOpts) phaseLive(section string, names []string, rcvbuf int, noENOBUFS bool, rate int64) ([]measure, error) {
	s, err := startStorm(o.duration, 0, rate)
	if err != nil {
		return nil, err
	}
	cs, err := startContestants(names, func(n string) []string { return o.contestantArgs(n, s, rcvbuf, noENOBUFS, 0) })
	if err != nil {
		s.abort()
		return nil, err
	}
	sr, err := s.run(o.duration + 30*time.Second)
	if err != nil {
		for _, c := range cs {
			c.finish(0)
		}
		return nil, err
	}
	for _, c := range cs {
		_ = c.send("expect " + strconv.FormatUint(sr.events(), 10))
	}
	var ms []measure
	var firstErr error
	for i, c := range cs {
		r, err := readResult(c, time.Minute)
		if err != nil {
			o.contestantFailed(section, err)
			continue
		}
		m := measure{Section: section, Row: names[i], Vals: liveVals(r, sr)}
		if r.RcvBuf > 0 {
			m.Note = fmt.Sprintf("rcvbuf %d", r.RcvBuf)
		}
		ms = append(ms, m)
	}
	if !strings.HasPrefix(section, "alone") {
		addRatios(ms)
	}
	return ms, firstErr
}

// contestantFailed records a contestant that failed in one measurement: its
// row is missing from that measurement, the report lists the failure, and
// the suite goes on (the machine is shared: a stray message from another
// process can stop a library that gives up on one, as vishvananda's monitor
// does).
func (o *suiteOpts) contestantFailed(section string, err error) {
	msg := fmt.Sprintf("%s: %v", section, err)
	o.failures = append(o.failures, msg)
	o.progress("contestant failed: %s", msg)
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func perEvent(v, events uint64) float64 {
	if events == 0 {
		return 0
	}
	return float64(v) / float64(events)
}

func liveVals(r contestantResult, sr stormResult) map[string]float64 {
	exp := sr.events()
	got := float64(r.Storm)
	if r.Storm > exp {
		got = float64(exp)
	}
	v := resultVals(r, sr, exp)
	v["loss"] = 100 * (1 - got/float64(max(exp, 1)))
	v["restarts"] = float64(r.Restarts)
	v["rcvbuf"] = float64(r.RcvBuf)
	return v
}

// resultVals are the values the live and drain phases both report for a
// contestant that was expected to see exp storm events.
func resultVals(r contestantResult, sr stormResult, exp uint64) map[string]float64 {
	return map[string]float64{
		"storm_rate": sr.rate(),
		"expected":   float64(exp),
		"received":   float64(r.Storm),
		"enobufs":    float64(r.ENOBUFS),
		"cpu":        perEvent(uint64(r.UserNs+r.SysNs), r.Events),
		"user":       perEvent(uint64(max(r.UserNs, 0)), r.Events),
		"sys":        perEvent(uint64(max(r.SysNs, 0)), r.Events),
		"allocs":     perEvent(r.Mallocs, r.Events),
		"bytes":      perEvent(r.Bytes, r.Events),
		"rss":        float64(r.VmHWMKB) / 1024,
		"events":     float64(r.Events),
	}
}

// refRow returns the name of the row that ratios in ms are taken against:
// ratioRef if ms has it, else "raw".
func refRow(ms []measure) string {
	for _, m := range ms {
		if m.Row == ratioRef {
			return ratioRef
		}
	}
	return "raw"
}

// addRatios adds, to each row, its ratios to the reference row of the same
// set (refRow): drain rate and CPU per event.
func addRatios(ms []measure) {
	ref := refRow(ms)
	var raw *measure
	for i := range ms {
		if ms[i].Row == ref {
			raw = &ms[i]
		}
	}
	if raw == nil {
		return
	}
	for i := range ms {
		for _, k := range []string{"rate", "cpu_rate", "cpu", "msgs"} {
			a, ok1 := ms[i].Vals[k]
			b, ok2 := raw.Vals[k]
			if ok1 && ok2 && b > 0 {
				ms[i].Vals["x_"+k] = a / b
			}
		}
	}
}

// phaseDrain freezes every receiver, queues the same storm in all of them,
// then releases them one at a time and times how fast each empties its queue.
func (o *suiteOpts) phaseDrain(section string, names []string) ([]measure, error) {
	clones := o.drainEvents / 2
	s, err := startStorm(0, clones, 0)
	if err != nil {
		return nil, err
	}
	expect := uint64(2 * clones)
	// Release in a different order each run, so that no receiver is always
	// the first one after the storm.
	order := slices.Clone(names)
	o.drainRound++
	rot := o.drainRound % len(order)
	order = append(order[rot:], order[:rot]...)
	cs, err := startContestants(order, func(n string) []string {
		a := o.contestantArgs(n, s, o.drainBuf, false, expect)
		if o.profile != "" {
			a = append(a, "-cpuprofile", filepath.Join(o.profile, section+"-"+n+".pprof"))
		}
		return a
	})
	if err != nil {
		s.abort()
		return nil, err
	}
	for _, c := range cs {
		if err := c.signal(syscall.SIGSTOP); err != nil {
			s.abort()
			return nil, err
		}
	}
	sr, err := s.run(2 * time.Minute)
	if err == nil && sr.events() != expect {
		err = fmt.Errorf("the storm made %d clones of the %d asked for (%d failed)", sr.Clones, clones, sr.Fails)
	}
	if err != nil {
		for _, c := range cs {
			c.finish(0)
		}
		return nil, err
	}
	// Let the storm's exit settle before the first release.
	time.Sleep(200 * time.Millisecond)
	var ms []measure
	var firstErr error
	for i, c := range cs {
		t0 := monoNow()
		if err := c.signal(syscall.SIGCONT); err != nil {
			firstErr = cmpErr(firstErr, err)
			c.finish(0)
			continue
		}
		r, err := readResult(c, time.Minute)
		if err != nil {
			o.contestantFailed(section, err)
			continue
		}
		v := resultVals(r, sr, expect)
		if r.EndNs > t0 && r.Storm >= expect {
			v["drained"] = float64(r.EndEvents)
			v["rate"] = float64(r.EndEvents) / (float64(r.EndNs-t0) / 1e9)
			if r.FirstNs > t0 && r.EndNs > r.FirstNs {
				// From the first storm event to the last: the steady
				// drain, without the time the process took to resume.
				v["steady_rate"] = float64(r.EndEvents-r.FirstEvents) / (float64(r.EndNs-r.FirstNs) / 1e9)
				v["resume_us"] = float64(r.FirstNs-t0) / 1e3
			}
			if r.EndCPUNs > 0 {
				v["cpu_rate"] = float64(r.EndEvents) / (float64(r.EndCPUNs) / 1e9)
			}
		}
		ms = append(ms, measure{Section: section, Row: order[i], Vals: v, Note: fmt.Sprintf("rcvbuf %d", r.RcvBuf)})
	}
	// Back to table order.
	slices.SortFunc(ms, func(a, b measure) int {
		return slices.Index(o.contestants, a.Row) - slices.Index(o.contestants, b.Row)
	})
	if len(names) > 1 {
		addRatios(ms)
	}
	return ms, firstErr
}

// renice sets the nice value of every thread of process pid. Threads and
// processes started later inherit it from the thread that creates them.
func renice(pid, nice int) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return
	}
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			_ = unix.Setpriority(unix.PRIO_PROCESS, tid, nice)
		}
	}
}

// loadAvg returns the first three fields of /proc/loadavg: other work on the
// machine disturbs every number here, and the report says how much there was.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
