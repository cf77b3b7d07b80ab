// Command w1 drives the kernel's 1-Wire buses over the netlink connector:
// list bus masters, search a bus, reset it, run a transaction of reads and
// writes, register or remove slaves, and watch masters and slaves come and
// go.
//
//	w1 [-json] [-timeout D] [-nobundle] masters
//	w1 [-json] ... slaves|search|alarm MASTER
//	w1 [-json] ... reset MASTER
//	w1 [-json] ... tx MASTER|SLAVE OP...      OP: reset | write HEX | read N | touch HEX
//	w1 [-json] ... add|remove MASTER SLAVE
//	w1 [-json] [-poll D] watch
//
// MASTER is a number or a name such as w1_bus_master1; SLAVE is a sysfs name
// such as 28-0000079e36c0. A tx is one w1 message: the kernel holds the bus
// for all of it. On a slave, the kernel resets the bus and selects the slave
// first. Output is text, or one JSON object per line with -json.
//
// It needs the wire module (modprobe wire) and a bus master driver. No
// privilege is needed, except for watch before Linux 6.6 (CAP_NET_ADMIN);
// watch -poll works for everyone.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/cli"
	"github.com/cnlink/connector/w1"
)

func main() { os.Exit(mainExit(os.Args[1:])) }

// mainExit runs the program until it finishes or SIGINT/SIGTERM arrives and
// returns the exit status: 0 on success, 1 on failure, 2 for bad usage.
func mainExit(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cli.Exit(os.Stderr, "w1", run(ctx, args, os.Stdout, os.Stderr, nil))
}

const usage = `usage: w1 [flags] COMMAND [flags] [ARGS]

  masters                     list the bus masters
  slaves MASTER               list the slaves the kernel knows on MASTER (no bus traffic)
  search MASTER               search MASTER's bus; the kernel registers what it finds
  alarm MASTER                search for slaves in an alarm state
  reset MASTER                reset the bus and say whether a device answered
  tx MASTER|SLAVE OP...       one transaction; OP: reset | write HEX | read N | touch HEX
  add MASTER SLAVE            register SLAVE (28-0000079e36c0) on MASTER without a search
  remove MASTER SLAVE         unregister SLAVE
  watch                       print masters and slaves as they are added and removed

MASTER is a number or w1_bus_masterN. Flags go before the command or
right after it (w1 watch -poll 1s, w1 -json masters):
`

// A dialer opens the w1 connection; tests pass one on a fake kernel.
type dialer func(cfg *w1.Config) (*w1.Conn, error)

func run(ctx context.Context, args []string, stdout, stderr io.Writer, dial dialer) error {
	fs := flag.NewFlagSet("w1", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	jsonOut := fs.Bool("json", false, "print one JSON object per line")
	timeout := fs.Duration("timeout", w1.DefaultTimeout, "time limit of each request")
	noBundle := fs.Bool("nobundle", false, "ask for unbundled replies (one datagram per record)")
	poll := fs.Duration("poll", 0, "watch: poll the master and slave lists at this interval instead of joining group 3 (needs no privilege)")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return cli.Usage(errors.New("missing command"))
	}
	cmd := fs.Arg(0)
	if !slices.Contains(commands, cmd) {
		return cli.Usagef("unknown command %q; the commands are %s (w1 -h prints the usage)", cmd, strings.Join(commands, ", "))
	}
	// Flags may also come right after the command, as with bus.
	if err := cli.Parse(fs, fs.Args()[1:]); err != nil {
		return err
	}
	rest := fs.Args()
	if *timeout <= 0 {
		return cli.Usage(errors.New("-timeout must be positive"))
	}
	switch {
	case *poll < 0:
		return cli.Usage(fmt.Errorf("-poll %v: must not be negative", *poll))
	case *poll > 0 && cmd != "watch":
		return cli.Usage(fmt.Errorf("-poll applies to watch only, not to %s", cmd))
	}
	if dial == nil {
		dial = w1.Dial
	}
	out := &printer{w: stdout, json: *jsonOut}
	want := func(n int, what string) error {
		if len(rest) != n {
			return cli.Usage(fmt.Errorf("%s: want %s", cmd, what))
		}
		return nil
	}
	open := func() (*w1.Conn, error) {
		return dial(&w1.Config{Timeout: *timeout, NoBundle: *noBundle})
	}
	// onMaster checks the arguments of a command on a master (the first
	// argument), opens the connection and runs f.
	onMaster := func(n int, what string, f func(w *w1.Conn, m w1.MasterID) error) error {
		if err := want(n, what); err != nil {
			return err
		}
		m, err := parseMaster(rest[0])
		if err != nil {
			return cli.Usage(err)
		}
		w, err := open()
		if err != nil {
			return err
		}
		defer w.Close()
		return f(w, m)
	}

	switch cmd {
	case "masters":
		if err := want(0, "no arguments"); err != nil {
			return err
		}
		w, err := open()
		if err != nil {
			return err
		}
		defer w.Close()
		ms, err := w.Masters(ctx)
		if err != nil {
			return err
		}
		return out.masters(ms)

	case "slaves", "search", "alarm":
		return onMaster(1, "MASTER", func(w *w1.Conn, m w1.MasterID) error {
			op := map[string]func(context.Context, w1.MasterID) ([]w1.SlaveID, error){
				"slaves": w.Slaves, "search": w.Search, "alarm": w.AlarmSearch,
			}[cmd]
			ids, err := op(ctx, m)
			if err != nil {
				return err
			}
			return out.slaves(m, ids)
		})

	case "reset":
		return onMaster(1, "MASTER", func(w *w1.Conn, m w1.MasterID) error {
			present, err := w.Reset(ctx, m)
			if err != nil {
				return err
			}
			return out.reset(m, present)
		})

	case "add", "remove":
		var id w1.SlaveID
		if len(rest) == 2 {
			var err error
			if id, err = w1.ParseSlaveID(rest[1]); err != nil {
				return cli.Usage(err)
			}
		}
		return onMaster(2, "MASTER SLAVE", func(w *w1.Conn, m w1.MasterID) error {
			var err error
			if cmd == "add" {
				err = w.AddSlave(ctx, m, id)
			} else {
				err = w.RemoveSlave(ctx, m, id)
			}
			if err != nil {
				return err
			}
			return out.done(cmd, m, id)
		})

	case "tx":
		if len(rest) < 2 {
			return cli.Usage(errors.New("tx: want MASTER|SLAVE and at least one OP"))
		}
		w, err := open()
		if err != nil {
			return err
		}
		defer w.Close()
		tx, results, err := buildTx(w, rest[0], rest[1:])
		if err != nil {
			return cli.Usage(err)
		}
		if err := tx.Do(ctx); err != nil {
			return err
		}
		return out.tx(rest[0], results)

	case "watch":
		if err := want(0, "no arguments"); err != nil {
			return err
		}
		var events func(func(w1.Event, error) bool)
		if *poll > 0 {
			w, err := open()
			if err != nil {
				return err
			}
			defer w.Close()
			events = w.Poll(ctx, *poll)
		} else {
			events = w1.Watch(ctx, nil)
		}
		for e, err := range events {
			if err != nil {
				if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
					return nil // interrupted: the watch ends with ctx.Err()
				}
				if errors.Is(err, connector.ErrOverrun) || errors.Is(err, w1.ErrNotEvent) {
					fmt.Fprintln(stderr, "w1: watch:", err)
					continue
				}
				return err
			}
			if err := out.event(e); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("command %q is listed but not handled (a bug in w1)", cmd)
}

// commands are w1's commands, in the order of the usage.
var commands = []string{"masters", "slaves", "search", "alarm", "reset", "tx", "add", "remove", "watch"}

// parseMaster accepts "1" and "w1_bus_master1".
func parseMaster(s string) (w1.MasterID, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(s, "w1_bus_master"), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("bad master %q: want a number or w1_bus_masterN", s)
	}
	return w1.MasterID(n), nil
}

// A result is the data of one READ or TOUCH of a transaction.
type result struct {
	Index int    `json:"index"`
	Cmd   string `json:"cmd"`
	Data  string `json:"data"`
	buf   []byte
}

// buildTx parses a target and its operations into a transaction.
func buildTx(w *w1.Conn, target string, ops []string) (*w1.Tx, []*result, error) {
	var tx *w1.Tx
	if strings.Contains(target, "-") || strings.Count(target, ".") == 2 {
		id, err := w1.ParseSlaveID(target)
		if err != nil {
			return nil, nil, err
		}
		tx = w.Slave(id)
	} else {
		m, err := parseMaster(target)
		if err != nil {
			return nil, nil, err
		}
		tx = w.Master(m)
	}
	var results []*result
	for i, n := 0, 0; i < len(ops); i, n = i+1, n+1 {
		op := ops[i]
		arg := func() (string, error) {
			if i+1 >= len(ops) {
				return "", fmt.Errorf("tx: %s needs an argument", op)
			}
			i++
			return ops[i], nil
		}
		switch op {
		case "reset":
			tx.Reset()
		case "write", "touch":
			a, err := arg()
			if err != nil {
				return nil, nil, err
			}
			b, err := hex.DecodeString(a)
			if err != nil || len(b) == 0 {
				return nil, nil, fmt.Errorf("tx: %s %q: want hex bytes such as cc44", op, a)
			}
			if op == "write" {
				tx.Write(b)
			} else {
				tx.Touch(b)
				results = append(results, &result{Index: n, Cmd: "TOUCH", buf: b})
			}
		case "read":
			a, err := arg()
			if err != nil {
				return nil, nil, err
			}
			c, err := strconv.Atoi(a)
			if err != nil || c <= 0 || c > 0xffff {
				return nil, nil, fmt.Errorf("tx: read %q: want a byte count from 1 to 65535", a)
			}
			buf := make([]byte, c)
			tx.Read(buf)
			results = append(results, &result{Index: n, Cmd: "READ", buf: buf})
		default:
			return nil, nil, fmt.Errorf("tx: unknown operation %q: want reset, write HEX, read N or touch HEX", op)
		}
	}
	return tx, results, nil
}

// A printer writes results as text or as JSON lines.
type printer struct {
	w    io.Writer
	json bool
}

func (p *printer) emit(v any, text string) error {
	if p.json {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		text = string(b) + "\n"
	}
	_, err := io.WriteString(p.w, text)
	return err
}

func (p *printer) masters(ms []w1.MasterID) error {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintln(&b, m)
	}
	return p.emit(struct {
		Masters []w1.MasterID `json:"masters"`
	}{ms}, b.String())
}

func (p *printer) slaves(m w1.MasterID, ids []w1.SlaveID) error {
	var b strings.Builder
	for _, id := range ids {
		valid := ""
		if !id.Valid() {
			valid = " (bad CRC)"
		}
		fmt.Fprintf(&b, "%v%s\n", id, valid)
	}
	return p.emit(struct {
		Master w1.MasterID  `json:"master"`
		Slaves []w1.SlaveID `json:"slaves"`
	}{m, ids}, b.String())
}

func (p *printer) reset(m w1.MasterID, present bool) error {
	text := fmt.Sprintf("%v: no presence pulse\n", m)
	if present {
		text = fmt.Sprintf("%v: presence\n", m)
	}
	return p.emit(struct {
		Master   w1.MasterID `json:"master"`
		Presence bool        `json:"presence"`
	}{m, present}, text)
}

func (p *printer) done(cmd string, m w1.MasterID, id w1.SlaveID) error {
	verb := map[string]string{"add": "added", "remove": "removed"}[cmd]
	return p.emit(struct {
		Master w1.MasterID `json:"master"`
		Slave  w1.SlaveID  `json:"slave"`
		Op     string      `json:"op"`
	}{m, id, cmd}, fmt.Sprintf("%v %s on %v\n", id, verb, m))
}

func (p *printer) tx(target string, results []*result) error {
	var b strings.Builder
	for _, r := range results {
		r.Data = hex.EncodeToString(r.buf)
		fmt.Fprintf(&b, "%d %s %s\n", r.Index, r.Cmd, r.Data)
	}
	if len(results) == 0 {
		b.WriteString("ok\n")
	}
	return p.emit(struct {
		Target  string    `json:"target"`
		Results []*result `json:"results"`
	}{target, results}, b.String())
}

func (p *printer) event(e w1.Event) error {
	v := struct {
		Event  string      `json:"event"`
		Master w1.MasterID `json:"master,omitempty"`
		Slave  *w1.SlaveID `json:"slave,omitempty"`
		Seq    uint32      `json:"seq"`
	}{Event: e.Kind.String(), Master: e.Master, Seq: e.Seq}
	if e.Kind == w1.SlaveAdded || e.Kind == w1.SlaveRemoved {
		v.Slave = &e.Slave
	}
	return p.emit(v, fmt.Sprintf("%v seq %d\n", e, e.Seq))
}
