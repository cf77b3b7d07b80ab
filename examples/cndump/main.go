//go:build linux

// Command cndump prints every netlink connector message that reaches it:
// tcpdump for NETLINK_CONNECTOR.
//
// It joins the given multicast groups (all 32 by default) and prints each
// message with its sender (the kernel or a userspace port), the group it came
// on, the callback id (named when connector.h registers it), seq, ack, len,
// flags and a hex dump of the payload. Process events (id 1:1), w1 messages
// (3:1), dm-log-userspace requests (7:1) and uvesafb/v86d tasks (4:1) are
// decoded.
//
//	cndump [-g all|LIST] [-id ID]... [-c N] [-listen-proc] [-hex=false] [-snap N]
//
// See examples/README.md for the flags, a sample and the privileges needed.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/cli"
)

func main() { os.Exit(mainExit(os.Args[1:])) }

// mainExit runs the program until it finishes or SIGINT/SIGTERM arrives and
// returns the exit status: 0 on success, 1 on failure, 2 for bad usage.
func mainExit(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cli.Exit(os.Stderr, "cndump", run(ctx, args, os.Stdout, os.Stderr))
}

// options are the parsed command line.
type options struct {
	groups     []connector.Group
	allGroups  bool
	ids        idFilter
	count      int
	hex        bool
	snap       int
	listenProc bool
	kernelOnly bool
	rcvbuf     int
}

func parseArgs(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("cndump", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	groups := fs.String("g", "all", "multicast groups to join: \"all\" (1-32) or a list such as 1,3,20-23")
	fs.Var(&o.ids, "id", "show only messages with this callback id: a name (proc, w1, ...), IDX:VAL, IDX:* or IDX; repeat for several")
	fs.IntVar(&o.count, "c", 0, "exit after printing this many messages (0: run until interrupted)")
	fs.BoolVar(&o.hex, "hex", true, "print a hex dump of each payload")
	fs.IntVar(&o.snap, "snap", 0, "dump at most this many payload bytes (0: all)")
	fs.BoolVar(&o.listenProc, "listen-proc", false, "subscribe to process events (PROC_CN_MCAST_LISTEN) so the kernel emits them even when no other listener is running; needs group 1")
	fs.BoolVar(&o.kernelOnly, "kernel-only", false, "drop (and count) messages that do not come from the kernel")
	fs.IntVar(&o.rcvbuf, "rcvbuf", 0, "socket receive buffer in bytes (0: the system default)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: cndump [flags]\n\nPrint the netlink connector messages of the joined groups.\n\n")
		fs.PrintDefaults()
	}
	if err := cli.Parse(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, cli.Usage(fmt.Errorf("unexpected argument %q (flags only; see -h)", fs.Arg(0)))
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"-c", o.count}, {"-snap", o.snap}, {"-rcvbuf", o.rcvbuf}} {
		if f.v < 0 {
			return nil, cli.Usage(fmt.Errorf("%s %d: must not be negative", f.name, f.v))
		}
	}
	if o.rcvbuf > connector.MaxBufferSize {
		return nil, cli.Usage(fmt.Errorf("-rcvbuf %d: at most %d bytes (the kernel takes a C int)", o.rcvbuf, connector.MaxBufferSize))
	}
	gs, all, err := parseGroups(*groups)
	if err != nil {
		return nil, cli.Usage(fmt.Errorf("-g %s: %w", *groups, err))
	}
	o.groups, o.allGroups = gs, all
	if o.listenProc && !containsGroup(o.groups, connector.IDProc.Group()) {
		return nil, cli.Usage(errors.New("-listen-proc needs group 1 among the groups (-g)"))
	}
	return o, nil
}

func containsGroup(gs []connector.Group, g connector.Group) bool {
	for _, x := range gs {
		if x == g {
			return true
		}
	}
	return false
}

// parseGroups parses "all" or a comma-separated list of group numbers and
// ranges ("1,3,20-23").
func parseGroups(s string) ([]connector.Group, bool, error) {
	s = strings.TrimSpace(s)
	if s == "all" || s == "" {
		gs := make([]connector.Group, 0, connector.MaxGroup)
		for g := connector.Group(1); g <= connector.MaxGroup; g++ {
			gs = append(gs, g)
		}
		return gs, true, nil
	}
	var seen [connector.MaxGroup + 1]bool
	var gs []connector.Group
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parseGroup(lo)
		if err != nil {
			return nil, false, err
		}
		b := a
		if isRange {
			if b, err = parseGroup(hi); err != nil {
				return nil, false, err
			}
			if b < a {
				return nil, false, fmt.Errorf("group range %q runs backwards", part)
			}
		}
		for g := a; g <= b; g++ {
			if !seen[g] {
				seen[g] = true
				gs = append(gs, g)
			}
		}
	}
	return gs, false, nil
}

func parseGroup(s string) (connector.Group, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	if err != nil || !connector.Group(n).Valid() {
		return 0, fmt.Errorf("bad group %q: groups are numbered 1 to %d", s, connector.MaxGroup)
	}
	return connector.Group(n), nil
}

// formatGroups prints groups compactly: "1-3,20".
func formatGroups(gs []connector.Group) string {
	var b strings.Builder
	for i := 0; i < len(gs); {
		j := i
		for j+1 < len(gs) && gs[j+1] == gs[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", gs[i], gs[j])
		} else {
			fmt.Fprintf(&b, "%d", gs[i])
		}
		i = j + 1
	}
	return b.String()
}

// idFilter is the set of -id flags.
type idFilter []idMatch

type idMatch struct {
	idx    uint32
	val    uint32
	anyVal bool
}

func (f *idFilter) String() string {
	if f == nil {
		return ""
	}
	var parts []string
	for _, m := range *f {
		if m.anyVal {
			parts = append(parts, fmt.Sprintf("%d:*", m.idx))
		} else {
			parts = append(parts, fmt.Sprintf("%d:%d", m.idx, m.val))
		}
	}
	return strings.Join(parts, ",")
}

func (f *idFilter) Set(s string) error {
	m, err := parseID(s)
	if err != nil {
		return err
	}
	*f = append(*f, m)
	return nil
}

func (f idFilter) match(id connector.CBID) bool {
	if len(f) == 0 {
		return true
	}
	for _, m := range f {
		if m.idx == id.Idx && (m.anyVal || m.val == id.Val) {
			return true
		}
	}
	return false
}

var namedIDs = map[string]connector.CBID{
	"proc":             connector.IDProc,
	"cifs":             connector.IDCIFS,
	"w1":               connector.IDW1,
	"v86d":             connector.IDV86D,
	"dst":              connector.IDDST,
	"dm-log-userspace": connector.IDDM,
	"dm":               connector.IDDM,
	"drbd":             connector.IDDRBD,
	"hv-kvp":           connector.IDKVP,
	"hv-vss":           connector.IDVSS,
}

func parseID(s string) (idMatch, error) {
	if id, ok := namedIDs[strings.ToLower(s)]; ok {
		return idMatch{idx: id.Idx, val: id.Val}, nil
	}
	if strings.ToLower(s) == "bb" {
		return idMatch{idx: connector.IdxBlackBoard, anyVal: true}, nil
	}
	idxs, vals, hasVal := strings.Cut(s, ":")
	idx, err := strconv.ParseUint(idxs, 0, 32)
	if err != nil {
		return idMatch{}, fmt.Errorf("bad id %q: want a name (proc, w1, ...), IDX:VAL, IDX:* or IDX, numbers in decimal or 0x hex", s)
	}
	if !hasVal || vals == "*" {
		return idMatch{idx: uint32(idx), anyVal: true}, nil
	}
	val, err := strconv.ParseUint(vals, 0, 32)
	if err != nil {
		return idMatch{}, fmt.Errorf("bad id %q: the value after ':' must be a number or '*'", s)
	}
	return idMatch{idx: uint32(idx), val: uint32(val)}, nil
}

// run is the program: it returns nil when it stopped because ctx ended or
// the -c count was reached.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseArgs(args, stderr)
	if err != nil {
		return err
	}
	cfg := &connector.Config{
		// A dump shows everything, including userspace messages on kernel
		// groups (which may be spoofs: the sender column tells).
		Senders:        connector.SendersAny,
		ReadBufferSize: o.rcvbuf,
	}
	if o.kernelOnly {
		cfg.Senders = connector.SendersKernelOnly
	}
	c, err := connector.Dial(cfg)
	if err != nil {
		return err
	}
	defer c.Close()

	joined, refused, err := joinGroups(c, o)
	if err != nil {
		return err
	}
	if len(refused) > 0 {
		fmt.Fprintf(stderr, "cndump: could not join groups %s: %v\n", formatGroups(refused), errRefused)
	}

	if o.listenProc {
		if err := sendProcOp(c, procOpListen); err != nil {
			return fmt.Errorf("subscribing to process events: %w", err)
		}
		defer func() {
			// IGNORE once, so the kernel's listener count drops again.
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			if err := sendProcOp(c, procOpIgnore); err != nil {
				fmt.Fprintf(stderr, "cndump: unsubscribing from process events: %v\n", err)
			}
		}()
	}

	// Unblock the reader when ctx ends; Close comes later, after IGNORE.
	stopWake := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Unix(1, 0)) })
	defer stopWake()

	fmt.Fprintf(stderr, "cndump: port %d, listening on groups %s\n", c.PortID(), formatGroups(joined))

	w := bufio.NewWriter(stdout)
	defer w.Flush()
	d := dumper{w: w, o: o}
	r := c.NewReader()
	defer r.Release()
	printed := 0
	var loopErr error
	for o.count == 0 || printed < o.count {
		m, from, err := r.Next()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			switch {
			case errors.Is(err, connector.ErrOverrun):
				fmt.Fprintf(w, "%s !! overrun: the kernel dropped messages because the receive buffer was full (ENOBUFS); raise -rcvbuf\n", stamp(time.Now()))
				_ = w.Flush()
				continue
			case errors.Is(err, connector.ErrTruncated), errors.Is(err, connector.ErrMalformed):
				fmt.Fprintf(w, "%s !! %v\n", stamp(time.Now()), err)
				_ = w.Flush()
				continue
			}
			loopErr = err
			break
		}
		if !o.ids.match(m.ID) {
			continue
		}
		d.print(time.Now(), m, from)
		if err := w.Flush(); err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
		printed++
	}
	st := c.Stats()
	fmt.Fprintf(stderr, "cndump: %s printed; received %s in %s; %s, %d truncated, %d malformed, %d foreign dropped\n",
		cli.Count(printed, "message", "messages"), cli.Count(st.Messages, "message", "messages"), cli.Count(st.Datagrams, "datagram", "datagrams"),
		cli.Count(st.Overruns, "overrun", "overruns"), st.Truncated, st.Malformed, st.Foreign)
	return loopErr
}

var errRefused = errors.New("permission denied: joining even-numbered groups needs CAP_NET_ADMIN (without it Linux 6.6 and later allow only odd-numbered groups, older kernels none)")

// joinGroups joins the requested groups one by one. With -g all, groups the
// kernel refuses for lack of privilege are reported and skipped; a refused
// group that was asked for by number is an error.
func joinGroups(c *connector.Conn, o *options) (joined, refused []connector.Group, err error) {
	for _, g := range o.groups {
		if err := c.JoinGroup(g); err != nil {
			if o.allGroups && errors.Is(err, os.ErrPermission) {
				refused = append(refused, g)
				continue
			}
			return nil, nil, fmt.Errorf("joining group %d: %w", g, err)
		}
		joined = append(joined, g)
	}
	if len(joined) == 0 {
		return nil, nil, fmt.Errorf("could not join any group: %w", errRefused)
	}
	return joined, refused, nil
}

func stamp(t time.Time) string { return t.Format("15:04:05.000000") }

// dumper formats messages.
type dumper struct {
	w   *bufio.Writer
	o   *options
	hex []byte
}

func (d *dumper) print(now time.Time, m connector.Message, from connector.Sender) {
	w := d.w
	w.WriteString(stamp(now))
	w.WriteString(" from ")
	if from.Kernel() {
		w.WriteString("kernel")
	} else {
		fmt.Fprintf(w, "port %d", from.Port)
	}
	if from.Group != 0 {
		fmt.Fprintf(w, " on group %d", from.Group)
		if from.Group.Kernel() && !from.Kernel() {
			w.WriteString(" (userspace sender on a kernel group: not from the kernel)")
		}
	} else {
		w.WriteString(" unicast")
	}
	fmt.Fprintf(w, ": id %d:%d", m.ID.Idx, m.ID.Val)
	if name, ok := m.ID.Name(); ok {
		fmt.Fprintf(w, " (%s)", name)
	}
	fmt.Fprintf(w, " seq %d ack %d len %d flags %#04x\n", m.Seq, m.Ack, len(m.Data), m.Flags)
	if m.ID == connector.IDProc {
		w.WriteString("  ")
		w.WriteString(describeProc(m))
		w.WriteByte('\n')
	}
	w.WriteString(describeDMV86D(m, from))
	w.WriteString(describeW1(m, from))
	if d.o.hex && len(m.Data) > 0 {
		data := m.Data
		cut := 0
		if d.o.snap > 0 && len(data) > d.o.snap {
			cut = len(data) - d.o.snap
			data = data[:d.o.snap]
		}
		d.hex = appendHexDump(d.hex[:0], data, "  ")
		w.Write(d.hex)
		if cut > 0 {
			fmt.Fprintf(w, "  ... %s (-snap %d)\n", cli.Count(cut, "more byte", "more bytes"), d.o.snap)
		}
	}
}

// appendHexDump appends a hexdump -C style dump of b, each line indented.
func appendHexDump(dst, b []byte, indent string) []byte {
	for off := 0; off < len(b); off += 16 {
		line := b[off:min(off+16, len(b))]
		dst = append(dst, indent...)
		dst = fmt.Appendf(dst, "%04x ", off)
		for i := 0; i < 16; i++ {
			if i == 8 {
				dst = append(dst, ' ')
			}
			if i < len(line) {
				dst = append(dst, ' ')
				dst = hex.AppendEncode(dst, line[i:i+1])
			} else {
				dst = append(dst, "   "...)
			}
		}
		dst = append(dst, "  |"...)
		for _, c := range line {
			if c < 0x20 || c > 0x7e {
				c = '.'
			}
			dst = append(dst, c)
		}
		dst = append(dst, "|\n"...)
	}
	return dst
}
