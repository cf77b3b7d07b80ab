//go:build linux

package main

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/cnlink/connector/proc"
	"golang.org/x/sys/unix"
)

// A record is one line of output: an event with what procmon knows about
// its task and process.
type record struct {
	ev   *proc.Event
	kind string
	k    kindSet // the -e kind that selects it (0: not selectable)

	pid, tgid, ppid int32
	thread          bool      // about a thread other than the main thread
	p               *procInfo // the process; may be nil
	parent          *procInfo // fork: the parent, when known

	// The task's own name and user ids (a thread's, for a thread).
	comm       string
	ruid, euid uint32
	uidKnown   bool

	newComm, oldComm string // comm events

	lifetime     int64 // ns, -1 when unknown
	lifetimeFrom string
	threadsLeft  int  // leader-exit: threads still alive
	groupEnd     bool // exit: the end of the whole thread group
}

// eventTime is the wall-clock time of an event, from the library's
// CLOCK_MONOTONIC conversion.
func eventTime(ev *proc.Event) time.Time { return proc.MonotonicTime(ev.Timestamp) }

// formatter appends records to a buffer.
type formatter struct {
	users   *users
	json    bool
	cgroups bool // text: show the cgroup path
	tty     bool // show the controlling terminal
	buf     []byte
}

// header returns the column header of the text output.
func (f *formatter) header() string {
	if f.tty {
		return "TIME            EVENT        PID    PPID USER     TTY     INFO                  DURATION COMMAND\n"
	}
	return "TIME            EVENT        PID    PPID USER     INFO                  DURATION COMMAND\n"
}

func (f *formatter) format(r *record) []byte {
	f.buf = f.buf[:0]
	if f.json {
		f.buf = f.appendJSON(f.buf, r)
	} else {
		f.buf = f.appendText(f.buf, r)
	}
	return f.buf
}

// status describes an exit's wait status: "exit 7", "SIGKILL",
// "SIGSEGV core".
func appendStatus(b []byte, code uint32) []byte {
	ws := unix.WaitStatus(code)
	switch {
	case ws.Exited():
		b = append(b, "exit "...)
		return strconv.AppendInt(b, int64(ws.ExitStatus()), 10)
	case ws.Signaled():
		b = append(b, signalName(ws.Signal())...)
		if ws.CoreDump() {
			b = append(b, " core"...)
		}
		return b
	}
	b = append(b, "status 0x"...)
	return strconv.AppendUint(b, uint64(code), 16)
}

func signalName(s unix.Signal) string {
	if n := unix.SignalName(s); n != "" {
		return n
	}
	return "SIG" + strconv.Itoa(int(s))
}

func (f *formatter) appendText(b []byte, r *record) []byte {
	ev := r.ev
	start := len(b)
	b = eventTime(ev).AppendFormat(b, "15:04:05.000000")
	b = append(b, ' ')
	col := func(b []byte, from, width int) []byte {
		for len(b)-from < width {
			b = append(b, ' ')
		}
		return append(b, ' ')
	}
	rpad := func(b []byte, s []byte, width int) []byte {
		for i := len(s); i < width; i++ {
			b = append(b, ' ')
		}
		return append(append(b, s...), ' ')
	}
	var num [24]byte
	if r.kind == "lost" {
		b = append(b, "LOST"...)
		b = col(b, start+16, 8)
		if ev.Lost == 0 {
			b = append(b, "events lost: the receive buffer overflowed (ENOBUFS); the count is unknown; raise -rcvbuf\n"...)
		} else {
			b = strconv.AppendUint(b, uint64(ev.Lost), 10)
			b = append(b, " events lost on cpu "...)
			b = strconv.AppendUint(b, uint64(ev.CPU), 10)
			b = append(b, " (gap in its sequence numbers)\n"...)
		}
		return b
	}
	if r.kind == "unknown" {
		b = append(b, "unknown"...)
		b = col(b, start+16, 8)
		b = append(b, "kernel event kind 0x"...)
		b = strconv.AppendUint(b, uint64(ev.Kind), 16)
		b = append(b, " payload "...)
		b = appendHex(b, ev.Raw)
		return append(b, '\n')
	}
	b = append(b, r.kind...)
	b = col(b, start+16, 8)
	b = rpad(b, strconv.AppendInt(num[:0], int64(r.pid), 10), 7)
	if r.ppid > 0 {
		b = rpad(b, strconv.AppendInt(num[:0], int64(r.ppid), 10), 7)
	} else {
		b = rpad(b, []byte("-"), 7)
	}
	// USER
	from := len(b)
	switch {
	case r.uidKnown:
		if n := f.users.name(r.ruid); n != "" {
			b = appendName(b, n)
		} else {
			b = strconv.AppendUint(b, uint64(r.ruid), 10)
		}
	default:
		b = append(b, '-')
	}
	b = col(b, from, 8)
	if f.tty {
		from = len(b)
		if r.p != nil && r.p.ttyKnown {
			b = append(b, ttyName(r.p.tty)...)
		} else {
			b = append(b, '-')
		}
		b = col(b, from, 7)
	}
	// INFO
	from = len(b)
	switch r.kind {
	case "clone":
		b = append(b, "thread of "...)
		b = strconv.AppendInt(b, int64(r.tgid), 10)
	case "exit":
		b = appendStatus(b, ev.ExitCode)
		if r.thread {
			b = append(b, " thread of "...)
			b = strconv.AppendInt(b, int64(r.tgid), 10)
		}
	case "leader-exit":
		b = appendStatus(b, ev.ExitCode)
		b = append(b, ", "...)
		b = strconv.AppendInt(b, int64(r.threadsLeft), 10)
		b = append(b, " threads live on"...)
	case "coredump":
		// The kernel sends this when a signal of the core-dump class
		// is acted on, whether or not a core is then written (ulimit
		// -c 0): the exit record says whether one was.
		b = append(b, "core-dump signal"...)
	case "comm":
		b = append(b, "was "...)
		if r.oldComm != "" {
			b = appendName(b, r.oldComm)
		} else {
			b = append(b, '?')
		}
	case "uid":
		b = append(b, "uid "...)
		b = strconv.AppendUint(b, uint64(ev.RUID), 10)
		b = append(b, " euid "...)
		b = strconv.AppendUint(b, uint64(ev.EUID), 10)
	case "gid":
		b = append(b, "gid "...)
		b = strconv.AppendUint(b, uint64(ev.RGID), 10)
		b = append(b, " egid "...)
		b = strconv.AppendUint(b, uint64(ev.EGID), 10)
	case "sid":
		b = append(b, "new session"...)
	case "ptrace":
		if ev.TracerTGID == 0 {
			b = append(b, "tracer detached"...)
		} else {
			b = append(b, "traced by "...)
			b = strconv.AppendInt(b, int64(ev.TracerTGID), 10)
		}
	}
	if r.thread && r.kind != "exit" && r.kind != "clone" {
		b = append(b, " (thread of "...)
		b = strconv.AppendInt(b, int64(r.tgid), 10)
		b = append(b, ')')
	}
	b = col(b, from, 21)
	// DURATION
	if r.lifetime >= 0 {
		b = rpad(b, appendDuration(num[:0], time.Duration(r.lifetime)), 8)
	} else {
		b = rpad(b, nil, 8)
	}
	// COMMAND
	b = f.appendCommand(b, r)
	return append(b, '\n')
}

// appendCommand writes the command line, quoting arguments that hold
// spaces, quotes, backslashes, control or other unprintable characters, or
// [name] when it is not known. A thread's record starts with its own
// [name]. Every string here comes from another process or from /proc, so
// none is written raw if it could move the cursor or forge a line.
func (f *formatter) appendCommand(b []byte, r *record) []byte {
	p := r.p
	if r.kind == "comm" {
		b = appendName(b, r.newComm)
		if p != nil && len(p.cmdline) > 0 {
			b = append(b, " ("...)
			b = appendArgs(b, p.cmdline)
			b = append(b, ')')
		}
		return f.appendCgroup(b, p)
	}
	if r.thread && r.comm != "" {
		b = append(b, '[')
		b = appendName(b, r.comm)
		b = append(b, "] "...)
	}
	switch {
	case p == nil:
		b = append(b, "<unknown process>"...)
	case p.gone && !r.thread && r.comm != "":
		b = append(b, '[')
		b = appendName(b, r.comm)
		b = append(b, "] <exited before its command line could be read>"...)
	case p.gone:
		b = append(b, "<exited before its command line could be read>"...)
	case len(p.cmdline) == 0 && !r.thread && r.comm != "":
		b = append(b, '[')
		b = appendName(b, r.comm)
		b = append(b, ']')
	case len(p.cmdline) == 0:
		b = append(b, "<unknown command>"...)
	default:
		b = appendArgs(b, p.cmdline)
		if p.cmdTrunc {
			b = append(b, " ..."...)
		}
	}
	return f.appendCgroup(b, p)
}

func (f *formatter) appendCgroup(b []byte, p *procInfo) []byte {
	if p != nil && p.container != "" {
		b = append(b, "  ["...)
		b = appendName(b, p.container)
		b = append(b, ']')
	}
	if f.cgroups && p != nil && p.cgroup != "" {
		b = append(b, "  cgroup="...)
		b = appendArg(b, p.cgroup)
	}
	return b
}

func appendArgs(b []byte, args []string) []byte {
	for i, a := range args {
		if i > 0 {
			b = append(b, ' ')
		}
		b = appendArg(b, a)
	}
	return b
}

// appendArg writes a command-line argument, quoted (Go syntax) when it is
// empty or holds a space or anything appendName would escape.
func appendArg(b []byte, a string) []byte {
	if a == "" || needsQuote(a, true) {
		return strconv.AppendQuote(b, a)
	}
	return append(b, a...)
}

// appendName writes a name (a process or thread name, a user name, a
// container id) as it is when it is printable, else quoted with Go escapes:
// "\x1b[2J" instead of a terminal escape sequence.
func appendName(b []byte, s string) []byte {
	if needsQuote(s, false) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}

// needsQuote reports whether s must be quoted to be shown safely and
// unambiguously: it holds invalid UTF-8, a control or other unprintable
// character (C0, DEL, C1, bidirectional overrides, line separators), a
// quote or a backslash, or, when space is set, a space.
func needsQuote(s string, space bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < ' ' || c == 0x7f || c == '"' || c == '\\' || space && c == ' ' {
				return true
			}
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || !strconv.IsPrint(r) {
			return true
		}
		i += size - 1
	}
	return false
}

// appendDuration writes d with three significant digits: 812µs, 12.3ms,
// 1.25s, 3m25s.
func appendDuration(b []byte, d time.Duration) []byte {
	switch {
	case d < time.Microsecond:
		b = strconv.AppendInt(b, int64(d), 10)
		return append(b, "ns"...)
	case d < time.Millisecond:
		return appendSig(b, float64(d)/1e3, "µs")
	case d < time.Second:
		return appendSig(b, float64(d)/1e6, "ms")
	case d < time.Minute:
		return appendSig(b, d.Seconds(), "s")
	}
	return append(b, d.Round(time.Second).String()...)
}

func appendSig(b []byte, v float64, unit string) []byte {
	prec := 0
	switch {
	case v < 10:
		prec = 2
	case v < 100:
		prec = 1
	}
	b = strconv.AppendFloat(b, v, 'f', prec, 64)
	return append(b, unit...)
}

func appendHex(b, data []byte) []byte {
	const digits = "0123456789abcdef"
	for _, c := range data {
		b = append(b, digits[c>>4], digits[c&15])
	}
	return b
}

// appendJSON writes the record as one JSON object. The field names are
// stable; examples/README.md documents them.
func (f *formatter) appendJSON(b []byte, r *record) []byte {
	ev := r.ev
	b = append(b, `{"time":"`...)
	b = eventTime(ev).AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","ts_ns":`...)
	b = strconv.AppendUint(b, ev.Timestamp, 10)
	b = append(b, `,"cpu":`...)
	if ev.CPU == proc.CPUUnknown {
		b = append(b, "-1"...)
	} else {
		b = strconv.AppendUint(b, uint64(ev.CPU), 10)
	}
	b = append(b, `,"kind":"`...)
	b = append(b, r.kind...)
	b = append(b, '"')
	switch r.kind {
	case "lost":
		b = append(b, `,"lost":`...)
		b = strconv.AppendUint(b, uint64(ev.Lost), 10)
		if ev.Lost == 0 {
			b = append(b, `,"loss":"overrun"}`...)
		} else {
			b = append(b, `,"loss":"gap"}`...)
		}
		return append(b, '\n')
	case "unknown":
		b = append(b, `,"what":`...)
		b = strconv.AppendUint(b, uint64(ev.Kind), 10)
		b = append(b, `,"raw":"`...)
		b = appendHex(b, ev.Raw)
		return append(b, "\"}\n"...)
	}
	b = appendIntField(b, "pid", int64(r.pid))
	b = appendIntField(b, "tgid", int64(r.tgid))
	b = appendIntField(b, "ppid", int64(r.ppid))
	b = append(b, `,"thread":`...)
	b = strconv.AppendBool(b, r.thread)
	if r.uidKnown && ev.Kind != proc.KindUID {
		b = appendIntField(b, "uid", int64(r.ruid))
		b = appendIntField(b, "euid", int64(r.euid))
		if n := f.users.name(r.ruid); n != "" {
			b = appendStringField(b, "user", n)
		}
	}
	if r.comm != "" {
		// A comm record's comm is the new name (new_comm too); the
		// task's name before it is old_comm.
		b = appendStringField(b, "comm", r.comm)
	}
	if p := r.p; p != nil {
		if len(p.cmdline) > 0 {
			b = append(b, `,"cmdline":[`...)
			valid := true
			for i, a := range p.cmdline {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, a)
				valid = valid && utf8.ValidString(a)
			}
			b = append(b, ']')
			if !valid {
				b = append(b, `,"cmdline_hex":[`...)
				for i, a := range p.cmdline {
					if i > 0 {
						b = append(b, ',')
					}
					b = append(b, '"')
					b = appendHex(b, []byte(a))
					b = append(b, '"')
				}
				b = append(b, ']')
			}
			if p.cmdTrunc {
				b = append(b, `,"cmdline_truncated":true`...)
			}
		}
		if p.gone {
			b = append(b, `,"gone":true`...)
		}
		if p.cgroup != "" {
			b = appendStringField(b, "cgroup", p.cgroup)
		}
		if p.container != "" {
			b = appendStringField(b, "container", p.container)
		}
		if f.tty && p.ttyKnown {
			b = appendStringField(b, "tty", ttyName(p.tty))
		}
	} else {
		b = append(b, `,"gone":true`...)
	}
	switch r.kind {
	case "exit", "leader-exit":
		b = appendIntField(b, "wait_status", int64(ev.ExitCode))
		ws := unix.WaitStatus(ev.ExitCode)
		switch {
		case ws.Exited():
			b = appendIntField(b, "exit_code", int64(ws.ExitStatus()))
		case ws.Signaled():
			b = appendStringField(b, "signal", signalName(ws.Signal()))
			b = append(b, `,"core_dumped":`...)
			b = strconv.AppendBool(b, ws.CoreDump())
		}
		if r.lifetime >= 0 {
			b = appendIntField(b, "lifetime_ns", r.lifetime)
			b = appendStringField(b, "lifetime_from", r.lifetimeFrom)
		}
		if r.kind == "leader-exit" {
			b = appendIntField(b, "threads_left", int64(r.threadsLeft))
		}
	case "comm":
		b = appendStringField(b, "new_comm", r.newComm)
		if r.oldComm != "" {
			b = appendStringField(b, "old_comm", r.oldComm)
		}
	case "uid":
		b = appendIntField(b, "uid", int64(ev.RUID))
		b = appendIntField(b, "euid", int64(ev.EUID))
		if n := f.users.name(ev.RUID); n != "" {
			b = appendStringField(b, "user", n)
		}
	case "gid":
		b = appendIntField(b, "rgid", int64(ev.RGID))
		b = appendIntField(b, "egid", int64(ev.EGID))
	case "ptrace":
		b = appendIntField(b, "tracer_pid", int64(ev.TracerPID))
		b = appendIntField(b, "tracer_tgid", int64(ev.TracerTGID))
	}
	return append(b, "}\n"...)
}

func appendIntField(b []byte, name string, v int64) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return strconv.AppendInt(b, v, 10)
}

// appendStringField writes "name":"v". A value that is not valid UTF-8
// (names and paths are bytes to the kernel) cannot be a JSON string as it
// is: the string then has U+FFFD for each invalid byte, and a second field,
// name_hex, holds the exact bytes in hexadecimal.
func appendStringField(b []byte, name, v string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	b = appendJSONString(b, v)
	if !utf8.ValidString(v) {
		b = append(b, ',', '"')
		b = append(b, name...)
		b = append(b, `_hex":"`...)
		b = appendHex(b, []byte(v))
		b = append(b, '"')
	}
	return b
}

// appendJSONString writes s as a JSON string. Invalid UTF-8 becomes
// U+FFFD, as encoding/json does (appendStringField adds the exact bytes);
// control characters are escaped.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\t':
				b = append(b, '\\', 't')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&15])
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
