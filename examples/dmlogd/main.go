//go:build linux

// Command dmlogd is a device-mapper userspace dirty-log server: it keeps the
// dirty logs of mirrors whose table names the "userspace" log type, in
// memory, with the semantics of the kernel's core log (package dmlog).
//
//	dmlogd [-json] [-q]
//
// Load a mirror whose log it keeps, here on two devices of 8192 sectors with
// regions of 1024 sectors:
//
//	dmsetup create m --table '0 8192 mirror userspace 3 my-uuid core 1024 2 /dev/A 0 /dev/B 0'
//
// dmlogd prints one line per request it answers (-json: one JSON object per
// line), and its counters when it stops (SIGINT, SIGTERM). It needs
// CAP_SYS_ADMIN (the kernel ignores replies from other processes) and, before
// Linux 6.6, CAP_NET_ADMIN to join group 7. The logs live as long as the
// process: when it restarts, the kernel re-sends each mirror's constructor
// within 2 s of the next request and the mirror resynchronises. See
// examples/README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/dmlog"
	"github.com/cnlink/connector/internal/cli"
)

func main() { os.Exit(mainExit(os.Args[1:])) }

func mainExit(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o, err := parseArgs(args, os.Stderr)
	if err != nil {
		return cli.Exit(os.Stderr, "dmlogd", oneprefix(err))
	}
	// A socket without groups first: serve checks the privilege and the
	// kernel agent, then joins group 7, and only then says it serves.
	c, err := connector.Dial(&connector.Config{ReadBufferSize: dmlog.ReadBufferSize})
	if err != nil {
		return cli.Exit(os.Stderr, "dmlogd", oneprefix(err))
	}
	defer c.Close()
	return cli.Exit(os.Stderr, "dmlogd", oneprefix(serve(ctx, o, c, &dmlog.Server{}, os.Stdout, os.Stderr)))
}

// oneprefix returns err with the library's leading prefix ("dmlog: ",
// "dmlog serve: ", "connector: ") taken off its text, so that with dmlogd's own in front a
// message carries one program prefix; errors.Is and errors.As see err as
// it was. Nil stays nil.
func oneprefix(err error) error {
	if err == nil {
		return nil
	}
	return prefixless{err}
}

type prefixless struct{ err error }

func (e prefixless) Error() string {
	// "dmlog: what", "dmlog serve: what" (an operation's error), and
	// either behind "connector: ".
	s := strings.TrimPrefix(e.err.Error(), "connector: ")
	for _, p := range []string{"dmlog: ", "dmlog "} {
		if rest, ok := strings.CutPrefix(s, p); ok {
			return rest
		}
	}
	return s
}

func (e prefixless) Unwrap() error { return e.err }

type options struct {
	json  bool
	quiet bool
}

func parseArgs(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("dmlogd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	fs.BoolVar(&o.json, "json", false, "trace each request as a JSON object on its own line")
	fs.BoolVar(&o.quiet, "q", false, "do not trace requests")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: dmlogd [-json] [-q]\n\nKeep the dirty logs of device-mapper mirrors with a \"userspace\" log, in memory.\n\n")
		fs.PrintDefaults()
	}
	if err := cli.Parse(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, cli.Usagef("unexpected argument %q (flags only; see -h)", fs.Arg(0))
	}
	if o.json && o.quiet {
		return nil, cli.Usagef("-json and -q exclude each other")
	}
	return o, nil
}

// traceRecord is one -json line.
type traceRecord struct {
	Time     time.Time `json:"time"`
	Type     string    `json:"type"`
	Seq      uint32    `json:"seq"`
	UUID     string    `json:"uuid"`
	LUID     string    `json:"luid"`
	DataLen  int       `json:"data_len"`
	Errno    int       `json:"errno"`
	Ack      bool      `json:"ack,omitempty"`
	ReplyLen int       `json:"reply_len"`
	TookUS   int64     `json:"took_us"`
	Error    string    `json:"error,omitempty"`
}

// serve runs s on c until ctx ends, tracing to stdout and reporting to
// stderr.
func serve(ctx context.Context, o *options, c *connector.Conn, s *dmlog.Server, stdout, stderr io.Writer) error {
	var mu sync.Mutex
	enc := json.NewEncoder(stdout)
	s.ErrorLog = func(err error) {
		mu.Lock()
		fmt.Fprintln(stderr, "dmlogd:", oneprefix(err))
		mu.Unlock()
	}
	if !o.quiet {
		s.Trace = func(t dmlog.Trace) {
			mu.Lock()
			defer mu.Unlock()
			if o.json {
				r := traceRecord{Time: time.Now().UTC(), Type: t.Request.Type.String(), Seq: t.Request.Seq, UUID: t.Request.UUID,
					LUID: fmt.Sprintf("%#x", t.Request.LUID), DataLen: t.DataLen, Errno: int(t.Errno), Ack: t.Ack,
					ReplyLen: t.ReplyLen, TookUS: t.Took.Microseconds()}
				if t.Err != nil {
					r.Error = t.Err.Error()
				}
				_ = enc.Encode(r)
				return
			}
			line := fmt.Sprintf("%s %-20v seq %-6d %s", time.Now().Format("15:04:05.000000"), t.Request.Type, t.Request.Seq, t.Request.UUID)
			if t.Errno != 0 {
				line += " errno " + t.Errno.Error()
			}
			fmt.Fprintln(stdout, line)
		}
	}
	// Say "serving" only when it is true: with CAP_SYS_ADMIN, the
	// dm-log-userspace agent registered, and group 7 joined (a mirror
	// loaded after that line finds the server; the kernel fails a load
	// that reaches no listener).
	if err := s.Check(c); err != nil {
		return err
	}
	if err := c.JoinGroup(connector.IDDM.Group()); err != nil {
		return fmt.Errorf("listening for dm-log-userspace's requests (group 7): %w", err)
	}
	fmt.Fprintf(stderr, "dmlogd: serving dm-log-userspace requests on group 7 (port %d)\n", c.PortID())
	err := s.Serve(ctx, c)
	st := s.Stats()
	fmt.Fprintf(stderr, "dmlogd: %s, %s, %s, %d unparsable, %d reconstructed, %d for unknown logs, %s; %s held\n",
		cli.Count(st.Requests, "request", "requests"), cli.Count(st.Replies, "reply", "replies"), cli.Count(st.Errors, "error", "errors"),
		st.Unparsable, st.Reconstructed, st.UnknownLog, cli.Count(st.Overruns, "overrun", "overruns"), cli.Count(st.Logs, "log", "logs"))
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil
	}
	return err
}
