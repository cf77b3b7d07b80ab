//go:build linux

// Command bus is a small message bus between processes over the netlink
// connector, entirely in userspace: publish/subscribe on a multicast group,
// and request/reply by port id with seq/ack correlation and a timeout.
//
//	bus sub   -g GROUP [-c N]                 print messages published on GROUP
//	bus pub   -g GROUP TEXT...                publish TEXT on GROUP
//	bus serve [-g GROUP] [-c N]               answer requests (ping, echo, time, pid)
//	bus call  -port PORT|-g GROUP [-timeout D] TEXT...   send a request, print the reply
//
// Sending to a port or a group needs CAP_NET_ADMIN, and bus works in the
// initial network namespace; see examples/README.md.
package main

import (
	"context"
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
		fmt.Fprintln(os.Stderr, "bus:", err)
		return 2
	default:
		fmt.Fprintln(os.Stderr, "bus:", err)
		return 1
	}
}

type usageError struct{ error }

const usage = `usage:
  bus sub   -g GROUP [-c N]                    print messages published on GROUP
  bus pub   -g GROUP TEXT...                   publish TEXT on GROUP
  bus serve [-g GROUP] [-c N]                  answer requests sent to this port (or on GROUP)
  bus call  (-port PORT | -g GROUP) [-timeout D] TEXT...
                                               send a request and print the reply

Requests a server understands: ping, echo TEXT, time, pid.
Use groups 11 to 32 (1 to 10 belong to kernel agents). Needs CAP_NET_ADMIN.
`

// run is the program.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{errors.New("missing command")}
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("bus "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage, "\nflags of ", cmd, ":\n")
		fs.PrintDefaults()
	}
	idFlag := fs.String("id", fmt.Sprintf("%#x:%d", DefaultID.Idx, DefaultID.Val), "callback id of bus messages, IDX:VAL; all parties must agree")
	group := fs.Uint("g", 0, "multicast group, 1 to 32 (prefer 11 and above)")
	count := fs.Int("c", 0, "sub, serve: exit after this many messages (0: until interrupted)")
	port := fs.Uint("port", 0, "call: the server's port id (as printed by bus serve)")
	timeout := fs.Duration("timeout", 2*time.Second, "call: how long to wait for the reply")
	switch cmd {
	case "sub", "pub", "serve", "call":
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usageError{fmt.Errorf("unknown command %q", cmd)}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	id, err := parseID(*idFlag)
	if err != nil {
		return usageError{err}
	}
	g := connector.Group(*group)
	if *group != 0 && !g.Valid() {
		return usageError{fmt.Errorf("bad group %d: groups are numbered 1 to %d", *group, connector.MaxGroup)}
	}
	if g.Kernel() {
		fmt.Fprintf(stderr, "bus: warning: group %d belongs to a kernel agent; receivers there drop userspace messages as spoofs. Use 11 to 32.\n", g)
	}
	if *count < 0 {
		return usageError{errors.New("-c must not be negative")}
	}
	if *port > 1<<32-1 {
		return usageError{fmt.Errorf("bad port %d: port ids are 32-bit", *port)}
	}
	text := strings.Join(fs.Args(), " ")

	switch cmd {
	case "sub":
		if g == 0 {
			return usageError{errors.New("sub needs -g GROUP")}
		}
		if fs.NArg() > 0 {
			return usageError{fmt.Errorf("sub takes no arguments, got %q", text)}
		}
		return subscribe(ctx, id, g, *count, stdout, stderr)
	case "pub":
		if g == 0 {
			return usageError{errors.New("pub needs -g GROUP")}
		}
		return publish(id, g, text, stderr)
	case "serve":
		if fs.NArg() > 0 {
			return usageError{fmt.Errorf("serve takes no arguments, got %q", text)}
		}
		return serve(ctx, id, g, *count, stdout, stderr)
	default: // call
		if (*port == 0) == (g == 0) {
			return usageError{errors.New("call needs exactly one of -port PORT and -g GROUP")}
		}
		if fs.NArg() == 0 {
			return usageError{errors.New("call needs the request text, for example: bus call -port 1234 ping")}
		}
		if *timeout <= 0 {
			return usageError{errors.New("-timeout must be positive")}
		}
		return call(ctx, id, uint32(*port), g, text, *timeout, stdout, stderr)
	}
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

func subscribe(ctx context.Context, id connector.CBID, g connector.Group, count int, stdout, stderr io.Writer) error {
	b, err := Open(id, g)
	if err != nil {
		return err
	}
	defer b.Close()
	fmt.Fprintf(stderr, "bus: port %d subscribed to group %d\n", b.Port(), g)
	n := 0
	err = b.Subscribe(ctx, func(d Delivery) bool {
		n++
		fmt.Fprintf(stdout, "%s port %d on group %d: %s\n", stamp(), d.From.Port, d.From.Group, printable(d.Body))
		return count == 0 || n < count
	})
	fmt.Fprintf(stderr, "bus: %d messages received, %d others ignored\n", n, b.Stray())
	return err
}

func publish(id connector.CBID, g connector.Group, text string, stderr io.Writer) error {
	b, err := Open(id)
	if err != nil {
		return err
	}
	defer b.Close()
	if err := b.Publish(g, []byte(text)); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "bus: port %d published %d bytes on group %d\n", b.Port(), len(text), g)
	return nil
}

func serve(ctx context.Context, id connector.CBID, g connector.Group, count int, stdout, stderr io.Writer) error {
	var groups []connector.Group
	if g != 0 {
		groups = append(groups, g)
	}
	b, err := Open(id, groups...)
	if err != nil {
		return err
	}
	defer b.Close()
	if g != 0 {
		fmt.Fprintf(stderr, "bus: serving on port %d and group %d\n", b.Port(), g)
	} else {
		fmt.Fprintf(stderr, "bus: serving on port %d\n", b.Port())
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := 0
	err = b.Serve(ctx, func(req Delivery) ([]byte, error) {
		reply, err := answer(string(req.Body))
		how := "port"
		if req.From.Group != 0 {
			how = fmt.Sprintf("group %d", req.From.Group)
		}
		if err != nil {
			fmt.Fprintf(stdout, "%s request seq %d from port %d via %s: %s -> error: %v\n", stamp(), req.Seq, req.From.Port, how, printable(req.Body), err)
		} else {
			fmt.Fprintf(stdout, "%s request seq %d from port %d via %s: %s -> %s\n", stamp(), req.Seq, req.From.Port, how, printable(req.Body), printable(reply))
		}
		n++
		if count > 0 && n >= count {
			cancel()
		}
		return reply, err
	}, time.Second, func(err error) { fmt.Fprintln(stderr, "bus:", err) })
	fmt.Fprintf(stderr, "bus: %d requests answered, %d other messages ignored\n", n, b.Stray())
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

func call(ctx context.Context, id connector.CBID, port uint32, g connector.Group, text string, timeout time.Duration, stdout, stderr io.Writer) error {
	b, err := Open(id)
	if err != nil {
		return err
	}
	defer b.Close()
	start := time.Now()
	reply, err := b.Request(ctx, port, g, []byte(text), timeout)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "bus: port %d got the reply to seq %d from port %d in %v\n", b.Port(), reply.Seq, reply.From.Port, time.Since(start).Round(time.Microsecond))
	_, err = fmt.Fprintf(stdout, "%s\n", reply.Body)
	return err
}

func stamp() string { return time.Now().Format("15:04:05.000000") }

// printable quotes a body that is not plain printable text.
func printable(b []byte) string {
	if utf8.Valid(b) {
		ok := true
		for _, r := range string(b) {
			if r < 0x20 || r == 0x7f {
				ok = false
				break
			}
		}
		if ok {
			return string(b)
		}
	}
	return strconv.Quote(string(b))
}
