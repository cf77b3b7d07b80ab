//go:build linux

// Command bus is a small message bus between processes over the netlink
// connector, entirely in userspace: publish/subscribe on a multicast group,
// and request/reply by port id or group, built on connector.Mux (a handler
// per callback id) and connector.Call (a request and its matching reply).
//
//	bus sub   -g GROUP [-c N]                 print messages published on GROUP
//	bus pub   -g GROUP TEXT...                publish TEXT on GROUP
//	bus serve [-g GROUP] [-c N]               answer requests (ping, echo, time, pid)
//	bus call  -port PORT|-g GROUP [-timeout D] TEXT...   send a request, print the reply
//
// pub, call and serve send to userspace ports or groups, which needs
// CAP_NET_ADMIN on every kernel. sub only joins its group: that needs
// CAP_NET_ADMIN before Linux 6.6, and from 6.6 on only for even-numbered
// groups. bus works in the initial network namespace; see
// examples/README.md.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
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
	"unicode/utf8"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/cli"
)

// DefaultID is the callback id that bus messages carry. No kernel agent
// registers it (a multicast is also offered to the kernel, which drops
// messages for ids it does not know). The idx spells "bus" in ASCII.
var DefaultID = connector.CBID{Idx: 0x627573, Val: 1}

// Kinds of bus message, carried in the cn_msg flags field, which the
// connector core leaves to its users.
const (
	KindPublish uint16 = 1 // a message to every subscriber of a group
	KindRequest uint16 = 2 // a request that expects one reply
	KindReply   uint16 = 3 // a successful reply
	KindError   uint16 = 4 // a reply that reports an error; the payload says which
)

// matchReply is the bus's reply rule: connector.rst's genealogy (same seq,
// ack+1) and a reply kind.
func matchReply(req, m connector.Message, from connector.Sender) bool {
	return connector.MatchGenealogy(req, m, from) && (m.Flags == KindReply || m.Flags == KindError)
}

func main() { os.Exit(mainExit(os.Args[1:])) }

// mainExit runs the program until it finishes or SIGINT/SIGTERM arrives and
// returns the exit status: 0 on success, 1 on failure, 2 for bad usage.
func mainExit(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cli.Exit(os.Stderr, "bus", run(ctx, args, os.Stdout, os.Stderr))
}

const usage = `usage:
  bus sub   -g GROUP [-c N]                    print messages published on GROUP
  bus pub   -g GROUP TEXT...                   publish TEXT on GROUP
  bus serve [-g GROUP] [-c N]                  answer requests sent to this port (or on GROUP)
  bus call  (-port PORT | -g GROUP) [-timeout D] TEXT...
                                               send a request and print the reply

Requests a server understands: ping, echo TEXT, time, pid.
Use groups 11 to 32 (1 to 10 belong to kernel agents). pub, call and serve
need CAP_NET_ADMIN; sub needs it before Linux 6.6, and from 6.6 on only for
even-numbered groups.
"bus COMMAND -h" lists the command's flags.
`

// options are the flags; each command defines only its own.
type options struct {
	id      string
	group   uint
	count   int
	port    uint
	timeout time.Duration
}

// run is the program.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.Usage(errors.New("missing command"))
	}
	cmd, args := args[0], args[1:]
	var o options
	fs := flag.NewFlagSet("bus "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.id, "id", fmt.Sprintf("%#x:%d", DefaultID.Idx, DefaultID.Val), "callback id of bus messages, IDX:VAL; all parties must agree")
	synopsis := ""
	switch cmd {
	case "sub":
		synopsis = "sub -g GROUP [-c N]"
		fs.UintVar(&o.group, "g", 0, "multicast group to subscribe to, 1 to 32 (prefer 11 and above)")
		fs.IntVar(&o.count, "c", 0, "exit after this many messages (0: until interrupted)")
	case "pub":
		synopsis = "pub -g GROUP TEXT..."
		fs.UintVar(&o.group, "g", 0, "multicast group to publish on, 1 to 32 (prefer 11 and above)")
	case "serve":
		synopsis = "serve [-g GROUP] [-c N]"
		fs.UintVar(&o.group, "g", 0, "also answer requests multicast on this group")
		fs.IntVar(&o.count, "c", 0, "exit after answering this many requests (0: until interrupted)")
	case "call":
		synopsis = "call (-port PORT | -g GROUP) [-timeout D] TEXT..."
		fs.UintVar(&o.port, "port", 0, "the server's port id (as printed by bus serve)")
		fs.UintVar(&o.group, "g", 0, "multicast the request on this group instead; the first reply wins")
		fs.DurationVar(&o.timeout, "timeout", 2*time.Second, "how long to wait for the reply")
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stderr, usage)
		return nil
	default:
		return cli.Usagef("unknown command %q; the commands are sub, pub, serve and call (bus -h prints the usage)", cmd)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: bus %s\n\nflags:\n", synopsis)
		fs.PrintDefaults()
	}
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	id, err := parseID(o.id)
	if err != nil {
		return cli.Usage(fmt.Errorf("-id: %w", err))
	}
	// Range-check before converting: -g 4294967297 must not become group 1.
	if o.group > uint(connector.MaxGroup) {
		return cli.Usage(fmt.Errorf("-g %d: groups are numbered 1 to %d", o.group, connector.MaxGroup))
	}
	g := connector.Group(o.group)
	switch {
	case o.count < 0:
		return cli.Usage(errors.New("-c must not be negative"))
	case o.port > 1<<32-1:
		return cli.Usage(fmt.Errorf("-port %d: port ids are 32-bit", o.port))
	case (cmd == "sub" || cmd == "pub") && g == 0:
		return cli.Usage(fmt.Errorf("%s needs -g GROUP", cmd))
	case (cmd == "sub" || cmd == "serve") && fs.NArg() > 0:
		return cli.Usage(fmt.Errorf("%s takes no arguments, got %q", cmd, strings.Join(fs.Args(), " ")))
	case cmd == "call" && o.port == 0 && isSet(fs, "port"):
		return cli.Usage(errors.New("-port 0: port id 0 is the kernel, not a bus server; give the port bus serve printed, or -g GROUP"))
	case cmd == "call" && (o.port == 0) == (g == 0):
		return cli.Usage(errors.New("call needs exactly one of -port PORT and -g GROUP"))
	case cmd == "pub" && fs.NArg() == 0:
		return cli.Usage(errors.New("pub needs the text to publish, for example: bus pub -g 20 hello"))
	case cmd == "call" && fs.NArg() == 0:
		return cli.Usage(errors.New("call needs the request text, for example: bus call -port 1234 ping"))
	case cmd == "call" && o.timeout <= 0:
		return cli.Usage(errors.New("-timeout must be positive"))
	}
	if g.Kernel() {
		fmt.Fprintf(stderr, "bus: warning: group %d belongs to a kernel agent; receivers there drop userspace messages as spoofs. Use 11 to 32.\n", g)
	}
	text := strings.Join(fs.Args(), " ")
	switch cmd {
	case "sub":
		return subscribe(ctx, id, g, o.count, stdout, stderr)
	case "pub":
		return publish(id, g, text, stderr)
	case "serve":
		return serve(ctx, id, g, o.count, stdout, stderr)
	}
	to := connector.ToPort(uint32(o.port))
	if g != 0 {
		to = connector.ToGroup(g)
	}
	return call(ctx, id, to, text, o.timeout, stdout, stderr)
}

// isSet reports whether the flag name was given on the command line.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func parseID(s string) (connector.CBID, error) {
	a, b, ok := strings.Cut(s, ":")
	idx, err1 := strconv.ParseUint(a, 0, 32)
	val, err2 := strconv.ParseUint(b, 0, 32)
	if !ok || err1 != nil || err2 != nil {
		return connector.CBID{}, fmt.Errorf("bad id %q: want IDX:VAL, numbers in decimal or 0x hex", s)
	}
	id := connector.CBID{Idx: uint32(idx), Val: uint32(val)}
	if name, known := id.Name(); known {
		return connector.CBID{}, fmt.Errorf("id %s belongs to the kernel's %s agent, which would receive every multicast: pick another", s, name)
	}
	return id, nil
}

// serveUntil runs mx on c until ctx ends (nil) or c fails, reporting
// receive problems (overruns, bad datagrams) on stderr.
func serveUntil(ctx context.Context, mx *connector.Mux, c *connector.Conn, stderr io.Writer) error {
	err := mx.Serve(ctx, c, &connector.ServeOptions{OnError: func(err error) { fmt.Fprintln(stderr, "bus:", err) }})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func subscribe(ctx context.Context, id connector.CBID, g connector.Group, count int, stdout, stderr io.Writer) error {
	c, err := connector.Dial(&connector.Config{Groups: []connector.Group{g}})
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(stderr, "bus: port %d subscribed to group %d\n", c.PortID(), g)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n, stray := 0, 0
	mx := connector.NewMux()
	mx.NotFound(connector.HandlerFunc(func(connector.Request) { stray++ }))
	mx.HandleFunc(id, func(r connector.Request) {
		if r.Msg.Flags != KindPublish || r.From.Group == 0 {
			stray++
			return
		}
		n++
		fmt.Fprintf(stdout, "%s port %d on group %d: %s\n", stamp(), r.From.Port, r.From.Group, printable(r.Msg.Data))
		if n == count {
			cancel()
		}
	})
	err = serveUntil(ctx, mx, c, stderr)
	fmt.Fprintf(stderr, "bus: %s received, %s ignored\n", cli.Count(n, "message", "messages"), cli.Count(stray, "other", "others"))
	return err
}

func publish(id connector.CBID, g connector.Group, text string, stderr io.Writer) error {
	c, err := connector.Dial(nil)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Multicast(g, connector.Message{ID: id, Flags: KindPublish, Data: []byte(text)}); err != nil {
		return fmt.Errorf("publishing to group %d: %w", g, err)
	}
	fmt.Fprintf(stderr, "bus: port %d published %d bytes on group %d\n", c.PortID(), len(text), g)
	return nil
}

func serve(ctx context.Context, id connector.CBID, g connector.Group, count int, stdout, stderr io.Writer) error {
	var groups []connector.Group
	if g != 0 {
		groups = append(groups, g)
	}
	c, err := connector.Dial(&connector.Config{Groups: groups})
	if err != nil {
		return err
	}
	defer c.Close()
	// Replies go to userspace ports, which needs CAP_NET_ADMIN: find out
	// now, with a message to ourselves, rather than after a request.
	if err := c.SendTo(c.PortID(), connector.Message{ID: id}); err != nil {
		return fmt.Errorf("cannot answer requests: %w", err)
	}
	if g != 0 {
		fmt.Fprintf(stderr, "bus: serving on port %d and group %d\n", c.PortID(), g)
	} else {
		fmt.Fprintf(stderr, "bus: serving on port %d\n", c.PortID())
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n, stray := 0, 0
	mx := connector.NewMux()
	mx.NotFound(connector.HandlerFunc(func(connector.Request) { stray++ }))
	mx.HandleFunc(id, func(r connector.Request) {
		if r.From.Port == c.PortID() {
			return // the start-up probe
		}
		if r.Msg.Flags != KindRequest || r.From.Port == 0 {
			stray++
			return
		}
		body, herr := answer(string(r.Msg.Data))
		kind, result := KindReply, printable(body)
		if herr != nil {
			kind, body, result = KindError, []byte(herr.Error()), "error: "+herr.Error()
		}
		how := "port"
		if r.From.Group != 0 {
			how = fmt.Sprintf("group %d", r.From.Group)
		}
		fmt.Fprintf(stdout, "%s request seq %d from port %d via %s: %s -> %s\n", stamp(), r.Msg.Seq, r.From.Port, how, printable(r.Msg.Data), result)
		// A requester whose queue stays full must not stall the server.
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		if err := r.Reply(connector.Message{ID: id, Seq: r.Msg.Seq, Ack: r.Msg.Ack + 1, Flags: kind, Data: body}); err != nil {
			fmt.Fprintf(stderr, "bus: replying to port %d: %v\n", r.From.Port, err)
			return
		}
		if n++; n == count {
			cancel()
		}
	})
	err = serveUntil(ctx, mx, c, stderr)
	fmt.Fprintf(stderr, "bus: %s answered, %s ignored\n", cli.Count(n, "request", "requests"), cli.Count(stray, "other message", "other messages"))
	return err
}

// answer is the demo server's request handler.
func answer(req string) ([]byte, error) {
	method, arg, _ := strings.Cut(req, " ")
	switch method {
	case "ping":
		return []byte("pong"), nil
	case "echo":
		return []byte(arg), nil
	case "time":
		return []byte(time.Now().Format(time.RFC3339Nano)), nil
	case "pid":
		return strconv.AppendInt(nil, int64(os.Getpid()), 10), nil
	}
	return nil, fmt.Errorf("unknown request %q (try ping, echo TEXT, time, pid)", method)
}

func call(ctx context.Context, id connector.CBID, to connector.Destination, text string, timeout time.Duration, stdout, stderr io.Writer) error {
	c, err := connector.Dial(nil)
	if err != nil {
		return err
	}
	defer c.Close()
	var r [8]byte
	_, _ = rand.Read(r[:])
	req := connector.Message{ID: id, Seq: binary.NativeEndian.Uint32(r[:4]), Ack: binary.NativeEndian.Uint32(r[4:]), Flags: KindRequest, Data: []byte(text)}
	start := time.Now()
	callCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m, from, err := connector.Call(callCtx, c, req, to, matchReply)
	switch {
	case err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("request to %v: no reply within %v (is a bus server running there?)", to, timeout)
	case err != nil:
		return fmt.Errorf("request to %v: %w", to, err)
	case m.Flags == KindError:
		return fmt.Errorf("port %d answered with an error: %s", from.Port, m.Data)
	}
	fmt.Fprintf(stderr, "bus: port %d got the reply to seq %d from port %d in %v\n", c.PortID(), m.Seq, from.Port, time.Since(start).Round(time.Microsecond))
	_, err = fmt.Fprintf(stdout, "%s\n", m.Data)
	return err
}

func stamp() string { return time.Now().Format("15:04:05.000000") }

// printable quotes a body that is not plain printable text.
func printable(b []byte) string {
	if utf8.Valid(b) && !strings.ContainsFunc(string(b), func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return string(b)
	}
	return strconv.Quote(string(b))
}
