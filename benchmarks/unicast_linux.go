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
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cnlink/connector"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Userspace-to-userspace throughput: one process sends unicast datagrams to
// another's port id as fast as it can, for a fixed time. Unicast between
// netlink sockets applies back-pressure (a full receiver makes the sender
// wait, nothing is dropped), so the sender's rate is the pair's throughput.

// unicastID is the callback id the messages carry: any index from
// CN_NETLINK_USERS (11) on is free for userspace traffic.
var unicastID = connector.CBID{Idx: 20, Val: 1}

// A pair is one line of the unicast table.
type pair struct {
	name, sender, receiver string
}

var unicastPairs = []pair{
	{"raw", "raw", "raw"},
	{"connector (Reader)", "connector", "connector"},
	{"connector (Reader, KernelWait)", "connector", "connector-kw"},
	{"connector, KernelWait both sides", "connector-kw", "connector-kw"},
	{"connector (Receive)", "connector", "connector-receive"},
	{"mdlayher (receive)", "raw", "mdlayher"},
}

// mixedPairs tell sender and receiver costs apart (-unicast-mixed).
var mixedPairs = []pair{
	{"raw send, connector Reader", "raw", "connector"},
	{"connector send, raw recv", "connector", "raw"},
}

type uResult struct {
	Msgs    uint64 `json:"msgs"`
	Bytes   uint64 `json:"bytes"`
	Bad     uint64 `json:"bad"`
	Ns      int64  `json:"ns"`
	UserNs  int64  `json:"user_ns"`
	SysNs   int64  `json:"sys_ns"`
	Mallocs uint64 `json:"mallocs"`
	Alloc   uint64 `json:"alloc"`
	Err     string `json:"err,omitempty"`
}

type usage struct {
	ru unix.Rusage
	ms runtime.MemStats
}

func takeUsage() usage {
	var u usage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &u.ru)
	runtime.ReadMemStats(&u.ms)
	return u
}

func (u usage) into(r *uResult, since usage) {
	r.UserNs = tvNs(u.ru.Utime) - tvNs(since.ru.Utime)
	r.SysNs = tvNs(u.ru.Stime) - tvNs(since.ru.Stime)
	r.Mallocs = u.ms.Mallocs - since.ms.Mallocs
	r.Alloc = u.ms.TotalAlloc - since.ms.TotalAlloc
}

func printResult(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	fmt.Printf("result %s\n", b)
	return nil
}

// --- receivers ---

type uReceiver interface {
	start(batch, msgbuf int) (port uint32, err error)
	run(n *atomic.Uint64, bytes *uint64) error
	stop()
}

type rawURecv struct {
	rawRecv
}

func (r *rawURecv) start(batch, msgbuf int) (uint32, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		return 0, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return 0, err
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50000}); err != nil {
		unix.Close(fd)
		return 0, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return 0, err
	}
	r.setup(fd, batch, msgbuf)
	return sa.(*unix.SockaddrNetlink).Pid, nil
}

func (r *rawURecv) run(cnt *atomic.Uint64, bytes *uint64) error {
	for !r.stopped.Load() {
		n, e := r.recvmmsg(uintptr(r.fd), unix.MSG_WAITFORONE)
		switch e {
		case 0:
		case unix.EAGAIN, unix.EINTR:
			continue
		default:
			return e
		}
		for i := 0; i < n; i++ {
			p, ok := r.payload(i)
			if !ok {
				continue
			}
			if _, _, data, ok := cnMsg(p); ok {
				*bytes += uint64(len(data))
				cnt.Add(1)
			}
		}
	}
	return nil
}

func (r *rawURecv) stop() { r.stopped.Store(true) }

type connURecv struct {
	simple     bool
	kernelWait bool // Config.KernelWait
	c          *connector.Conn
}

func (r *connURecv) start(batch, msgbuf int) (uint32, error) {
	c, err := connector.Dial(&connector.Config{BatchSize: batch, MessageBufferSize: msgbuf, KernelWait: r.kernelWait})
	if err != nil {
		return 0, err
	}
	r.c = c
	return c.PortID(), nil
}

func (r *connURecv) run(cnt *atomic.Uint64, bytes *uint64) error {
	var rd *connector.Reader
	if !r.simple {
		rd = r.c.NewReader()
		defer rd.Release()
	}
	for {
		var err error
		if r.simple {
			var msgs []connector.Message
			msgs, _, err = r.c.Receive()
			for _, m := range msgs {
				*bytes += uint64(len(m.Data))
				cnt.Add(1)
			}
		} else {
			var m connector.Message
			m, _, err = rd.Next()
			if err == nil {
				*bytes += uint64(len(m.Data))
				cnt.Add(1)
			}
		}
		if errors.Is(err, connector.ErrClosed) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (r *connURecv) stop() { _ = r.c.Close() }

type mdURecv struct{ c *netlink.Conn }

func (r *mdURecv) start(int, int) (uint32, error) {
	c, err := netlink.Dial(unix.NETLINK_CONNECTOR, nil)
	if err != nil {
		return 0, err
	}
	r.c = c
	return c.PID(), nil
}

func (r *mdURecv) run(cnt *atomic.Uint64, bytes *uint64) error {
	for {
		msgs, err := r.c.Receive()
		if err != nil {
			if isClosedErr(err) {
				return nil
			}
			return err
		}
		for _, m := range msgs {
			if _, _, data, ok := cnMsg(m.Data); ok {
				*bytes += uint64(len(data))
				cnt.Add(1)
			}
		}
	}
}

func (r *mdURecv) stop() { _ = r.c.Close() }

func newUReceiver(name string) (uReceiver, error) {
	switch name {
	case "raw":
		return &rawURecv{}, nil
	case "connector":
		return &connURecv{}, nil
	case "connector-kw":
		return &connURecv{kernelWait: true}, nil
	case "connector-receive":
		return &connURecv{simple: true}, nil
	case "mdlayher":
		return &mdURecv{}, nil
	}
	return nil, fmt.Errorf("unknown unicast receiver %q", name)
}

func urecvMain(args []string) error {
	fs := flag.NewFlagSet("urecv", flag.ContinueOnError)
	name := fs.String("name", "raw", "receiver")
	batch := fs.Int("batch", 16, "datagrams per recvmmsg")
	msgbuf := fs.Int("msgbuf", 32<<10, "bytes per datagram buffer")
	limit := fs.Duration("limit", 2*time.Minute, "hard limit")
	cpu := fs.Int("cpu", -1, "run on this CPU only")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pinSelf(*cpu)
	r, err := newUReceiver(*name)
	if err != nil {
		return err
	}
	port, err := r.start(*batch, *msgbuf)
	if err != nil {
		return err
	}
	var cnt atomic.Uint64
	var bytes uint64
	u0 := takeUsage()
	done := make(chan error, 1)
	go func() { done <- r.run(&cnt, &bytes) }()
	fmt.Printf("ready %d\n", port)

	// Wait for "expect N" (what the sender sent), then for the messages.
	var expect uint64
	sc := bufio.NewScanner(os.Stdin)
	if sc.Scan() {
		expect, _ = strconv.ParseUint(strings.TrimPrefix(sc.Text(), "expect "), 10, 64)
	}
	// Unicast loses nothing, so every message comes; a receiver that makes
	// no progress for a second has a bug, and stops rather than hang.
	deadline := time.Now().Add(*limit)
	last, lastChange := cnt.Load(), time.Now()
	var runErr error
	for cnt.Load() < expect && time.Now().Before(deadline) && time.Since(lastChange) < time.Second {
		select {
		case runErr = <-done:
			done = nil
		case <-time.After(5 * time.Millisecond):
		}
		if done == nil {
			break
		}
		if n := cnt.Load(); n != last {
			last, lastChange = n, time.Now()
		}
	}
	if done != nil {
		r.stop()
		runErr = <-done
	}
	res := uResult{Msgs: cnt.Load(), Bytes: bytes}
	takeUsage().into(&res, u0)
	if runErr != nil {
		res.Err = runErr.Error()
	}
	return printResult(res)
}

// --- senders ---

type uSender interface {
	start(port uint32, payload []byte) error
	send() error
}

type rawUSend struct {
	fd int
	b  []byte
	sa *unix.SockaddrNetlink
}

func (s *rawUSend) start(port uint32, payload []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		return err
	}
	m := connector.Message{ID: unicastID, Data: payload}
	cn, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	s.fd, s.b, s.sa = fd, nlmsg(cn, 0), &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: port}
	return nil
}

// send is a blocking sendto: a full receiver puts the sender to sleep in the
// kernel until there is room.
func (s *rawUSend) send() error { return unix.Sendto(s.fd, s.b, 0, s.sa) }

type connUSend struct {
	kernelWait bool // Config.KernelWait
	c          *connector.Conn
	port       uint32
	m          connector.Message
}

func (s *connUSend) start(port uint32, payload []byte) error {
	c, err := connector.Dial(&connector.Config{KernelWait: s.kernelWait})
	if err != nil {
		return err
	}
	s.c, s.port, s.m = c, port, connector.Message{ID: unicastID, Data: payload}
	return nil
}

func (s *connUSend) send() error { return s.c.SendTo(s.port, s.m) }

func usendMain(args []string) error {
	fs := flag.NewFlagSet("usend", flag.ContinueOnError)
	name := fs.String("name", "raw", "sender")
	port := fs.Uint("port", 0, "receiver's port id")
	size := fs.Int("size", 16, "payload bytes")
	d := fs.Duration("duration", 2*time.Second, "how long to send")
	cpu := fs.Int("cpu", -1, "run on this CPU only")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pinSelf(*cpu)
	var s uSender
	switch *name {
	case "raw":
		s = &rawUSend{}
	case "connector":
		s = &connUSend{}
	case "connector-kw":
		s = &connUSend{kernelWait: true}
	default:
		return fmt.Errorf("unknown unicast sender %q", *name)
	}
	payload := make([]byte, *size)
	for i := range payload {
		payload[i] = byte(i)
	}
	if err := s.start(uint32(*port), payload); err != nil {
		return err
	}
	u0 := takeUsage()
	t0 := monoNow()
	end := t0 + d.Nanoseconds()
	var n uint64
	var err error
	for {
		for range 64 {
			if err = s.send(); err != nil {
				break
			}
			n++
		}
		if err != nil || monoNow() >= end {
			break
		}
	}
	res := uResult{Msgs: n, Bytes: n * uint64(*size), Ns: monoNow() - t0}
	takeUsage().into(&res, u0)
	if err != nil {
		res.Err = err.Error()
	}
	return printResult(res)
}

// --- orchestration ---

func (o *suiteOpts) phaseUnicast() ([]measure, error) {
	var ms []measure
	for _, size := range o.payloads {
		pairs := unicastPairs
		if o.unicastMixed {
			pairs = append(slices.Clone(pairs), mixedPairs...)
		}
		var rounds [][]measure
		for i := 0; i < o.unicastRounds; i++ {
			var got []measure
			for _, p := range pairs {
				o.progress("unicast %d-byte payloads, round %d of %d: %s", size, i+1, o.unicastRounds, p.name)
				m, err := o.unicastOnce(p, size)
				if err != nil {
					return ms, fmt.Errorf("%s, %d bytes: %w", p.name, size, err)
				}
				got = append(got, m)
			}
			addRatios(got)
			rounds = append(rounds, got)
		}
		ms = append(ms, medians(rounds)...)
	}
	return ms, nil
}

func (o *suiteOpts) unicastOnce(p pair, size int) (measure, error) {
	rcpu, scpu := -1, -1
	if o.pin && runtime.NumCPU() >= 2 {
		rcpu, scpu = 1, 0
	}
	rc, err := spawn("unicast receiver "+p.receiver, "r-"+p.receiver, []string{modeEnv + "=urecv"},
		"-name", p.receiver, "-batch", strconv.Itoa(o.batch), "-msgbuf", strconv.Itoa(o.msgbuf), "-cpu", strconv.Itoa(rcpu))
	if err != nil {
		return measure{}, err
	}
	defer rc.finish(5 * time.Second)
	port, err := rc.line("ready", 20*time.Second)
	if err != nil {
		return measure{}, err
	}
	sc, err := spawn("unicast sender "+p.sender, "s-"+p.sender, []string{modeEnv + "=usend"},
		"-name", p.sender, "-port", port, "-size", strconv.Itoa(size), "-duration", o.uDuration.String(), "-cpu", strconv.Itoa(scpu))
	if err != nil {
		return measure{}, err
	}
	defer sc.finish(5 * time.Second)
	var sr, rr uResult
	l, err := sc.line("result ", o.uDuration+time.Minute)
	if err == nil {
		err = json.Unmarshal([]byte(l), &sr)
	}
	if err == nil && sr.Err != "" {
		err = fmt.Errorf("sender: %s", sr.Err)
	}
	if err != nil {
		return measure{}, err
	}
	_ = rc.send("expect " + strconv.FormatUint(sr.Msgs, 10))
	l, err = rc.line("result ", time.Minute)
	if err == nil {
		err = json.Unmarshal([]byte(l), &rr)
	}
	if err == nil && rr.Err != "" {
		err = fmt.Errorf("receiver: %s", rr.Err)
	}
	if err != nil {
		return measure{}, err
	}
	secs := float64(sr.Ns) / 1e9
	return measure{Section: "unicast-" + strconv.Itoa(size), Row: p.name, Vals: map[string]float64{
		"size":        float64(size),
		"msgs":        float64(sr.Msgs) / secs,
		"mbs":         float64(sr.Msgs) * float64(size) / secs / 1e6,
		"delivered":   100 * float64(rr.Msgs) / float64(max(sr.Msgs, 1)),
		"recv_cpu":    perEvent(uint64(rr.UserNs+rr.SysNs), rr.Msgs),
		"send_cpu":    perEvent(uint64(sr.UserNs+sr.SysNs), sr.Msgs),
		"recv_allocs": perEvent(rr.Mallocs, rr.Msgs),
		"send_allocs": perEvent(sr.Mallocs, sr.Msgs),
	}}, nil
}

// pinSelf binds every thread of this process to one CPU (cpu < 0: no-op),
// and runs Go code on one thread at a time, as the runtime would have chosen
// had the process started bound: more would only contend for the one CPU.
// Threads started later inherit the binding from their creator.
func pinSelf(cpu int) {
	if cpu < 0 {
		return
	}
	runtime.GOMAXPROCS(1)
	var set unix.CPUSet
	set.Set(cpu)
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			_ = unix.SchedSetaffinity(tid, &set)
		}
	}
}
