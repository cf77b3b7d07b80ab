//go:build linux

// Command procmon is a live process monitor built on the process events
// connector: every fork, exec and exit on the machine as it happens, with
// user, command line, exit status, lifetime and container.
//
//	procmon [-json] [-e KINDS] [-p PID]... [-comm PATTERN]... [-stats] [-d DURATION]
//
// It reads each process's command line from /proc at exec, as early as
// possible, and says so when the process was already gone. Lost events are
// reported in the output as "lost" records, never hidden. SIGINT and SIGTERM
// end it cleanly. See examples/README.md for the flags, the JSON fields and
// the privileges needed (none on Linux 6.6 and later).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/cli"
	"github.com/cnlink/connector/proc"
	"golang.org/x/sys/unix"
)

func main() { os.Exit(mainExit(os.Args[1:])) }

// mainExit runs the program until it finishes or SIGINT/SIGTERM arrives and
// returns the exit status: 0 on success, 1 on failure, 2 for bad usage.
func mainExit(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, args, os.Stdout, os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintln(os.Stderr, "procmon:", err)
		return 2
	default:
		fmt.Fprintln(os.Stderr, "procmon:", err)
		return 1
	}
}

type usageError struct{ error }

type options struct {
	json       bool
	kinds      kindSet
	pids       []int32
	comms      []string
	stats      bool
	duration   time.Duration
	rcvbuf     int
	line       bool
	cgroups    bool // read cgroups
	cgroupPath bool // text: show them
	passwd     string
	passwdSet  bool          // -passwd was given
	rcvbufSet  bool          // -rcvbuf was given
	checkEvery time.Duration // -check-events
	procRoot   string
	coalesce   time.Duration
	cpuprofile string
	tty        bool // show the controlling terminal
	kernelWait bool // wait for events in recvmmsg, off the Go poller
	bell       bool // a doorbell socket for execs (bell.go)
	bellFilter bool // -doorbell=bpf: its BPF socket filter on any kernel
}

// bellFlag is -doorbell: a boolean flag that also takes "bpf".
type bellFlag options

func (f *bellFlag) IsBoolFlag() bool { return true }

func (f *bellFlag) String() string {
	switch {
	case f == nil || f.bell && !f.bellFilter:
		return "true"
	case f.bellFilter:
		return "bpf"
	}
	return "false"
}

func (f *bellFlag) Set(s string) error {
	if s == "bpf" {
		f.bell, f.bellFilter = true, true
		return nil
	}
	on, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("want true, false or bpf")
	}
	f.bell, f.bellFilter = on, false
	return nil
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func parseArgs(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("procmon", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{procRoot: "/proc"}
	var pids, comms listFlag
	kinds := fs.String("e", "fork,exec,exit,coredump", "event kinds to show: a list of fork, clone (new threads, and thread exits), exec, exit, coredump, comm, uid, gid, sid, ptrace, or all")
	fs.BoolVar(&o.json, "json", false, "print one JSON object per event (JSON lines) instead of text")
	fs.Var(&pids, "p", "show only this process and its descendants (repeat for several)")
	fs.Var(&comms, "comm", "show only processes whose name (comm) matches this glob pattern (repeat for several)")
	fs.BoolVar(&o.stats, "stats", false, "print a summary when done: events per kind, losses, top forkers and execs")
	fs.DurationVar(&o.duration, "d", 0, "stop after this long (0: run until interrupted)")
	// An int64 flag, so that a value past 32 bits gets the range error
	// below on 386 too, not the flag package's bare "value out of range".
	rcvbuf := fs.Int64("rcvbuf", 8<<20, "socket receive buffer in bytes; beyond net.core.rmem_max it needs CAP_NET_ADMIN")
	fs.BoolVar(&o.line, "l", false, "flush the output after every event (the default when it is a terminal)")
	fs.BoolVar(&o.cgroups, "cgroup", true, "read each process's cgroup at exec, for the container tag and the JSON cgroup field; -cgroup=false saves a /proc read per exec, which costs much CPU during process storms")
	fs.BoolVar(&o.cgroupPath, "cgroup-path", false, "text output: also show each process's cgroup path")
	fs.DurationVar(&o.coalesce, "coalesce", 2*time.Millisecond, "when events come often (over 800 wake-ups a second) and no exec came for 10ms, wait this long after waking for more before reading on: much less CPU per event (0: never wait)")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a Go CPU profile to this file (for work on procmon itself)")
	fs.StringVar(&o.passwd, "passwd", "/etc/passwd", "file to map user ids to names")
	fs.BoolVar(&o.tty, "tty", false, "show each process's controlling terminal (a TTY column; \"tty\" in JSON), as forkstat -x does; it costs a /proc read per exec")
	fs.BoolVar(&o.tty, "x", false, "same as -tty")
	o.bell = true
	fs.Var((*bellFlag)(o), "doorbell", "wake up at once for execs only, and read other events in batches at most about 10 ms later (100 ms when idle): much less CPU per event under load; the kernel filters the execs from Linux 6.6, a BPF socket filter before (-doorbell=bpf: the BPF filter on any kernel; -doorbell=false: off)")
	fs.DurationVar(&o.checkEvery, "check-events", 10*time.Second, "check this often that the kernel still makes process events (from Linux 6.6 any process can switch them off for the whole machine, and no listener would see a loss): if not, say so and turn them back on (0: never check)")
	fs.BoolVar(&o.kernelWait, "kernel-wait", true, "wait for events in a raw system call that keeps procmon's thread, rather than in Go's poller: less CPU per wake-up")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: procmon [flags]\n\nShow process events as they happen.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("unexpected argument %q (flags only; see -h)", fs.Arg(0))}
	}
	k, err := parseKinds(*kinds)
	if err != nil {
		return nil, usageError{err}
	}
	o.kinds = k
	for _, s := range pids {
		n, err := strconv.ParseInt(s, 10, 32)
		if err != nil || n <= 0 {
			return nil, usageError{fmt.Errorf("bad -p %q: want a process id", s)}
		}
		o.pids = append(o.pids, int32(n))
	}
	for _, c := range comms {
		if _, err := path.Match(c, ""); err != nil {
			return nil, usageError{fmt.Errorf("bad -comm pattern %q: %v", c, err)}
		}
		if minMatchLen(c) > commLen {
			fmt.Fprintf(stderr, "procmon: -comm %q: the kernel keeps at most %d bytes of a process name, so this pattern is matched against the base name of each command line's program (argv[0]) too\n", c, commLen)
		}
		o.comms = append(o.comms, c)
	}
	if o.duration < 0 {
		return nil, usageError{fmt.Errorf("-d %v is negative: give a duration of 0 (run until interrupted) or more", o.duration)}
	}
	if o.checkEvery < 0 {
		return nil, usageError{fmt.Errorf("-check-events %v is negative: give 0 (never check) or more", o.checkEvery)}
	}
	if o.coalesce < 0 {
		return nil, usageError{fmt.Errorf("-coalesce %v is negative: give 0 (never wait) or more", o.coalesce)}
	}
	if *rcvbuf < 0 || *rcvbuf > connector.MaxBufferSize {
		return nil, usageError{fmt.Errorf("-rcvbuf %d is out of range: give 0 (the system default) to %d bytes", *rcvbuf, int64(connector.MaxBufferSize))}
	}
	o.rcvbuf = int(*rcvbuf)
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "passwd":
			o.passwdSet = true
		case "rcvbuf":
			o.rcvbufSet = true
		}
	})
	return o, nil
}

// minMatchLen is the length of the shortest name a path.Match pattern can
// match: every character but '*' stands for at least one byte.
func minMatchLen(pat string) int {
	n := 0
	for i := 0; i < len(pat); i++ {
		switch pat[i] {
		case '*':
		case '\\':
			i++
			n++
		case '[':
			for i < len(pat) && pat[i] != ']' {
				i++
			}
			n++
		default:
			n++
		}
	}
	return n
}

func parseKinds(s string) (kindSet, error) {
	var k kindSet
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(strings.ToLower(name))
		if name == "all" {
			k |= kAll
			continue
		}
		found := false
		for _, kn := range kindNames {
			if kn.name == name || (name == "core" && kn.k == kCoredump) || (name == "thread" && kn.k == kClone) {
				k |= kn.k
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown event kind %q in -e (want fork, clone, exec, exit, coredump, comm, uid, gid, sid, ptrace or all)", name)
		}
	}
	return k, nil
}

// run is the program.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseArgs(args, stderr)
	if err != nil {
		return err
	}
	u, err := newUsers(o.passwd)
	switch {
	case err != nil && o.passwdSet:
		// Asked for by name: a file that cannot be read is a mistake.
		return usageError{fmt.Errorf("-passwd: %w", err)}
	case err != nil:
		fmt.Fprintf(stderr, "procmon: warning: %v: users are shown by uid\n", err)
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
		defer pprof.StopCPUProfile()
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// procmon does its work in one goroutine. With more Ps the Go
		// scheduler spins looking for work after every wake-up, which
		// measurably costs CPU per event (see examples/README.md).
		runtime.GOMAXPROCS(1)
	}
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	// The doorbell is opened before the main socket subscribes: should its
	// subscription wait for an acknowledgement timeout
	// (proc.DefaultAckTimeout, a second), with the main socket subscribed
	// already, the events queued meanwhile, execs among them, would be read
	// that much later, too late to read /proc for the processes that ended
	// in the meantime. Thread
	// names are read at creation, which needs a prompt wake-up for every
	// thread: no doorbell with -e clone.
	var bell *doorbell
	if o.bell && o.kinds&kClone == 0 {
		if bell = bellOpener(o); bell != nil {
			defer bell.Close()
		}
	}
	// Take every kind: procmon needs forks and exits to follow processes
	// whatever it shows, and an unfiltered listener counts lost events
	// exactly.
	l, c, err := listen(o)
	if err != nil {
		return fmt.Errorf("%w%s", err, listenHint(err))
	}
	defer l.Close()

	out := newOutput(stdout, o.line)
	f := &formatter{users: u, json: o.json, cgroups: o.cgroupPath && o.cgroups, tty: o.tty}
	mon := newMonitor(filter{kinds: o.kinds, comms: o.comms}, newProcFS(o.procRoot), f.users, func(r *record) {
		out.write(f.format(r))
	})
	defer mon.fs.Close()
	mon.needComm = o.json || len(o.comms) > 0
	mon.threadComm = o.kinds&kClone != 0
	mon.fs.noCgroup = !o.cgroups
	mon.fs.tty = o.tty
	// Snapshot after subscribing, so no process falls between the two.
	ps, err := proc.Snapshot()
	if err != nil {
		// Without it procmon still works, knowing less about the
		// processes that were running before it.
		fmt.Fprintf(stderr, "procmon: warning: listing the running processes: %v\n", err)
	}
	if dead := mon.seed(ps, o.pids); len(dead) > 0 {
		for _, pid := range dead {
			fmt.Fprintf(stderr, "procmon: warning: -p %d: no such process (a later process with that pid will not be shown)\n", pid)
		}
		if mon.treeEnded {
			return fmt.Errorf("none of the -p processes is running")
		}
	}

	if !o.json {
		out.write([]byte(f.header()))
		out.flush()
	}
	rb, _ := l.ReadBuffer()
	// The kernel reports twice the size applied (it counts its own
	// bookkeeping too, socket(7)): print the size applied.
	if o.rcvbufSet && o.rcvbuf > 0 && rb/2 < o.rcvbuf {
		// Without CAP_NET_ADMIN the kernel caps the buffer at
		// net.core.rmem_max without an error (socket(7), SO_RCVBUF).
		// Said only when asked for: the default's cap, which every
		// user without the capability meets, shows in the listening
		// line.
		fmt.Fprintf(stderr, "procmon: warning: -rcvbuf %d: the kernel applied %d bytes (its net.core.rmem_max): a larger buffer needs CAP_NET_ADMIN (run as root) or a larger net.core.rmem_max\n", o.rcvbuf, rb/2)
	}
	fmt.Fprintf(stderr, "procmon: listening (%d processes running, receive buffer %d bytes)\n", len(ps), rb/2)

	src := newSource(l, o.coalesce, func() {
		out.flush()
		mon.prune()
	}, out.dirty)
	if mon.threadComm {
		src.prompt = func(ev *proc.Event) bool { return ev.Kind == proc.KindFork && ev.IsThread() }
	}
	if bell != nil {
		src.bell = bell
		src.pre, src.drained = mon.preExec, mon.sweepPre
	} else if c != nil {
		// No doorbell: procmon waits on the main socket itself
		// (wait.go), which costs less per wake-up than a receive
		// that blocks through the library.
		rc, err := c.SyscallConn()
		if err == nil {
			src.wait, err = openWait(rc)
		}
		if err != nil {
			return fmt.Errorf("listening: %w", err)
		}
		defer src.wait.Close()
	}
	defer src.stopOn(ctx)()
	var watch *eventsWatch
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	if o.checkEvery > 0 {
		watch = watchEvents(wctx, l, o.checkEvery, stderr)
	}
	var loopErr error
	var ev proc.Event
	handle := func(ev *proc.Event) bool {
		mon.handle(ev)
		if err := out.error(); err != nil {
			loopErr = fmt.Errorf("writing output: %w", err)
			return false
		}
		return true
	}
	var after uint64 // events stamped after the stop, read while draining
	for {
		err := src.next(&ev)
		if err != nil {
			if errors.Is(err, errStopped) {
				break
			}
			if errors.Is(err, connector.ErrMalformed) || errors.Is(err, connector.ErrTruncated) {
				fmt.Fprintf(stderr, "procmon: skipping a bad message: %v\n", err)
				continue
			}
			loopErr = err
			break
		}
		if stop := src.stopTime(); stop != 0 && ev.Kind != proc.KindLost && ev.Timestamp > stop+uint64(stopGrace) {
			// Stopping: what happened before the stop is read and
			// shown; later events are not, and when they keep
			// coming, procmon stops reading.
			if after++; after >= drainAfter {
				break
			}
			continue
		}
		if !handle(&ev) {
			break
		}
		if mon.treeEnded {
			fmt.Fprintln(stderr, "procmon: every watched process has ended")
			break
		}
	}
	out.flush()
	stopWatch()
	watch.wait()
	st := l.Stats()
	drops, derr := l.Drops()
	if o.stats {
		if o.json {
			writeSummaryJSON(stdout, &mon.stats, st, drops)
		} else {
			writeSummaryText(stderr, &mon.stats, st, drops)
		}
	}
	fmt.Fprintln(stderr, closingLine(st, drops, derr, after, watch.switchOffs()))
	return loopErr
}

// closingLine is the last line on stderr: events received and lost. It
// never says "0 lost" while a loss of unknown size happened: an overrun not
// fully counted yet, or offs times that the kernel had stopped making
// events (eventsoff.go).
func closingLine(st proc.Stats, drops uint64, derr error, after, offs uint64) string {
	dropText := strconv.FormatUint(drops, 10)
	if derr != nil {
		dropText = "unknown"
	}
	lost := strconv.FormatUint(st.Lost, 10)
	if st.Overruns > 0 || offs > 0 {
		// Not every overrun loss is revealed by a sequence gap yet;
		// the kernel's drop counter may know more.
		n := st.Lost
		if derr == nil && drops > n {
			n = drops
		}
		lost = "at least " + strconv.FormatUint(n, 10)
		if n == 0 {
			lost = "an unknown number of events"
		}
	}
	s := fmt.Sprintf("procmon: %s received, %s lost (%d in sequence gaps, %s of unknown size); kernel socket drops %s",
		cli.Count(st.Events, "event", "events"), lost, st.Lost, cli.Count(st.Overruns, "buffer overrun", "buffer overruns"), dropText)
	if offs > 0 {
		s += "; process events were switched off for the whole machine " + cli.Count(offs, "time", "times") + " (see the warnings)"
	}
	if after > 0 {
		s += "; " + cli.Count(after, "event that came after the stop was", "events that came after the stop were") + " not shown"
	}
	return s
}

// drainAfter bounds the draining at exit: after this many events stamped
// after the stop, everything queued before it has been read.
const drainAfter = 1000

// stopGrace: events stamped up to this long after the stop are still shown,
// and procmon waits this long for them once its queue is empty. The kernel
// sends an exit after it has woken the parent, so a parent that reaps its
// child and then stops procmon may do so before the exit is sent.
const stopGrace = 100 * time.Millisecond

// listen subscribes to every event kind. With -kernel-wait (the default)
// its socket is off the Go runtime's poller (connector.Config.KernelWait),
// and procmon waits on it itself (the doorbell, or wait.go): the Conn is
// returned for that, nil otherwise.
func listen(o *options) (*proc.Listener, *connector.Conn, error) {
	if !o.kernelWait {
		l, err := proc.Listen(&proc.Config{ReadBufferSize: o.rcvbuf})
		return l, nil, err
	}
	c, err := connector.Dial(&connector.Config{
		Groups:            []connector.Group{connector.IDProc.Group()},
		MessageBufferSize: proc.MessageBufferSize,
		BatchSize:         proc.DefaultListenBatchSize,
		Senders:           connector.SendersKernelOnly,
		KernelWait:        true,
	})
	if err != nil {
		return nil, nil, err
	}
	l, err := proc.NewListener(c, &proc.Config{ReadBufferSize: o.rcvbuf})
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return l, c, nil
}

// listenHint adds advice to a Listen error.
func listenHint(err error) string {
	switch {
	case errors.Is(err, os.ErrPermission):
		return "; before Linux 6.6, process events need CAP_NET_ADMIN: run as root"
	case errors.Is(err, connector.ErrNotInitialNetNS):
		return "; in a container: docker run --net=host"
	case errors.Is(err, proc.ErrNamespace):
		return "; in a container: docker run --userns=host --pid=host"
	}
	return ""
}

// output buffers what procmon prints. It is flushed after every event when
// line-buffered (a terminal, or -l), otherwise when the buffer fills and
// when the source says so (see source): a write per event would cost a
// system call per event. It is used by one goroutine.
type output struct {
	w    *bufio.Writer
	line bool
	err  error
}

func newOutput(w io.Writer, line bool) *output {
	if f, ok := w.(*os.File); ok && !line {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			line = true
		}
	}
	return &output{w: bufio.NewWriterSize(w, 64<<10), line: line}
}

func (o *output) error() error { return o.err }

// dirty reports whether output waits in the buffer.
func (o *output) dirty() bool { return o.w.Buffered() > 0 }

func (o *output) write(b []byte) {
	if o.err != nil {
		return
	}
	if _, err := o.w.Write(b); err != nil {
		o.err = err
		return
	}
	if o.line {
		o.err = o.w.Flush()
	}
}

func (o *output) flush() {
	if o.err == nil {
		o.err = o.w.Flush()
	}
}

type forker struct {
	pid   int32
	comm  string
	forks uint64
}

type execer struct {
	program string
	execs   uint64
}

func (s *summary) topForkers(n int) []forker {
	var all []forker
	for pid, c := range s.forkers {
		all = append(all, forker{pid, c.name, c.n})
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].forks != all[j].forks {
			return all[i].forks > all[j].forks
		}
		return all[i].pid < all[j].pid
	})
	return all[:min(n, len(all))]
}

func (s *summary) topExecs(n int) []execer {
	var all []execer
	for name, c := range s.execs {
		all = append(all, execer{name, c.n})
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].execs != all[j].execs {
			return all[i].execs > all[j].execs
		}
		return all[i].program < all[j].program
	})
	return all[:min(n, len(all))]
}

var summaryKinds = []string{"fork", "clone", "exec", "exit", "thread-exit", "leader-exit", "coredump", "comm", "uid", "gid", "sid", "ptrace"}

func writeSummaryText(w io.Writer, s *summary, st proc.Stats, drops uint64) {
	fmt.Fprintf(w, "\nprocmon summary over %v\n", time.Since(s.start).Round(time.Millisecond))
	fmt.Fprintf(w, "  %-12s %10s\n", "EVENT", "COUNT")
	for _, k := range summaryKinds {
		if n := s.counts[k]; n > 0 {
			fmt.Fprintf(w, "  %-12s %10d\n", k, n)
		}
	}
	if s.unknown > 0 {
		fmt.Fprintf(w, "  %-12s %10d\n", "unknown", s.unknown)
	}
	fmt.Fprintf(w, "  %-12s %10d   (%s of unknown size; kernel socket drops %d)\n", "lost", st.Lost, cli.Count(st.Overruns, "buffer overrun", "buffer overruns"), drops)
	if f := s.topForkers(10); len(f) > 0 {
		fmt.Fprintf(w, "  top forkers:\n")
		for _, e := range f {
			fmt.Fprintf(w, "  %10d  %s (pid %d)\n", e.forks, appendName(nil, e.comm), e.pid)
		}
	}
	if e := s.topExecs(10); len(e) > 0 {
		fmt.Fprintf(w, "  top execs:\n")
		for _, x := range e {
			fmt.Fprintf(w, "  %10d  %s\n", x.execs, appendArg(nil, x.program))
		}
	}
}

func writeSummaryJSON(w io.Writer, s *summary, st proc.Stats, drops uint64) {
	b := []byte(`{"kind":"summary"`)
	b = appendIntField(b, "duration_ns", int64(time.Since(s.start)))
	b = append(b, `,"counts":{`...)
	first := true
	for _, k := range summaryKinds {
		if n := s.counts[k]; n > 0 {
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = strconv.AppendUint(b, n, 10)
		}
	}
	b = append(b, '}')
	b = appendIntField(b, "unknown", int64(s.unknown))
	b = appendIntField(b, "lost", int64(st.Lost))
	b = appendIntField(b, "overruns", int64(st.Overruns))
	b = appendIntField(b, "drops", int64(drops))
	b = append(b, `,"top_forkers":[`...)
	for i, e := range s.topForkers(10) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"pid":`...)
		b = strconv.AppendInt(b, int64(e.pid), 10)
		b = appendStringField(b, "comm", e.comm)
		b = appendIntField(b, "forks", int64(e.forks))
		b = append(b, '}')
	}
	b = append(b, `],"top_execs":[`...)
	for i, e := range s.topExecs(10) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"program":`...)
		b = appendJSONString(b, e.program)
		b = appendIntField(b, "execs", int64(e.execs))
		b = append(b, '}')
	}
	b = append(b, "]}\n"...)
	_, _ = w.Write(b)
}
