package w1

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/cnlink/connector"
)

// ErrNoPresence matches the *Error of a RESET (or of a slave command, whose
// reset comes first) that saw no presence pulse: no device answered on the
// bus. Conn.Reset reports it as present == false instead.
var ErrNoPresence = errors.New("w1: no presence pulse: no device answered the reset")

// ErrNoReply reports a request that got no complete reply before its
// deadline. With the w1 agent registered this does not happen; it is what a
// request to an unregistered agent would get, which Conn checks for first
// (connector.ErrNoAgent). The error that matches it reads "w1: op: no reply
// ...", and matches context.DeadlineExceeded too.
var ErrNoReply = errors.New("no reply from the kernel's w1 agent before the deadline")

// ErrTxDone matches the error of a second [Tx.Do] on the same Tx: a Tx runs
// once, so that its writes are never repeated on the bus by accident. Build
// a new Tx (Conn.Master, Conn.Slave) to run the commands again.
var ErrTxDone = errors.New("the transaction already ran: a Tx runs once (a second Do would repeat its writes on the bus); build a new Tx to run its commands again")

// An opError is an error with the text the package writes for it, "w1: op:
// detail", that unwraps to the errors it reports.
type opError struct {
	msg  string
	errs []error
}

func (e *opError) Error() string   { return e.msg }
func (e *opError) Unwrap() []error { return e.errs }

// wrap gives err the one "w1: op: " prefix of the package's errors, and
// detail after it if not empty, unless err has the prefix already. An error
// of package connector loses its "connector: op: " prefix in the text only:
// errors.Is and errors.As still find it.
func wrap(op, detail string, err error) error {
	if err == nil {
		return nil
	}
	s := err.Error()
	if strings.HasPrefix(s, "w1: ") {
		return err
	}
	var oe *connector.OpError
	if errors.As(err, &oe) && strings.HasPrefix(s, oe.Error()) {
		s = oe.Err.Error() + s[len(oe.Error()):]
	}
	if detail != "" {
		s = detail + ": " + s
	}
	return &opError{msg: "w1: " + op + ": " + s, errs: []error{err}}
}

// An Error is a non-zero status in a reply of the kernel's w1 agent: for one
// command of a request (Index >= 0), or for the whole message (Index -1: an
// unknown master or slave, an empty or unknown message, unknown flags).
//
// It unwraps to Errno, so errors.Is(err, syscall.ENODEV) works, and a status
// of 255 (a RESET without a presence pulse) also matches ErrNoPresence.
type Error struct {
	// Op names the request: "reset", "search", "transaction", ...
	Op string
	// Index is the position of the failing command in the request, or -1
	// when the status is for the whole message.
	Index int
	// Cmd is the failing command (valid when Index >= 0).
	Cmd CmdType
	// Errno is the status: a positive errno, or 255 for no presence.
	Errno syscall.Errno
}

func (e *Error) Error() string {
	what := "request"
	if e.Index >= 0 {
		what = fmt.Sprintf("command %d (%v)", e.Index, e.Cmd)
	}
	return fmt.Sprintf("w1: %s: %s failed: %s", e.Op, what, statusText(uint8(e.Errno)))
}

// Unwrap returns the errno (none for the no-presence status, which is not an
// errno).
func (e *Error) Unwrap() error {
	if e.Errno == StatusNoPresence {
		return nil
	}
	return e.Errno
}

// Is makes a no-presence status match ErrNoPresence.
func (e *Error) Is(target error) bool {
	return target == ErrNoPresence && e.Errno == StatusNoPresence
}

// statusText explains a status byte, with the kernel's reasons for the
// statuses the w1 agent sends (drivers/w1/w1_netlink.c).
func statusText(s uint8) string {
	switch syscall.Errno(s) {
	case 0:
		return "ok"
	case StatusNoPresence:
		return "status 255: no presence pulse (no device answered the reset)"
	case syscall.ENODEV:
		return "status 19 (ENODEV): no such master or slave, or the slave did not answer its reset"
	case syscall.EPROTO:
		return "status 71 (EPROTO): message without commands, or of an unknown type"
	case syscall.EINVAL:
		return "status 22 (EINVAL): unknown command or flag, a command the target does not take (slaves take only READ, WRITE and TOUCH), or a slave that is already (or not) attached"
	case syscall.E2BIG:
		return "status 7 (E2BIG): a command runs past the end of its message"
	}
	return fmt.Sprintf("status %d (%v)", s, syscall.Errno(s))
}

// nilCtx is the error of a request or iteration given a nil
// context.Context; op names it.
func nilCtx(op string) error {
	return errors.New("w1: " + op + ": ctx is nil: give it a context.Context (context.Background() for the Conn's Config.Timeout)")
}
