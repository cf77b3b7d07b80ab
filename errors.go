package connector

import (
	"errors"
	"fmt"
	"net"
	"os"
)

// Sentinel errors. Every error returned by this package is an *OpError that
// names the operation; test for these conditions with errors.Is.
var (
	// ErrClosed is returned by every call on a Conn (or its Readers) after
	// Close. It also matches os.ErrClosed and net.ErrClosed.
	ErrClosed error = &sentinel{msg: "use of closed connector connection", also: []error{os.ErrClosed, net.ErrClosed}}

	// ErrOverrun reports that the socket's receive buffer overflowed and the
	// kernel dropped messages (ENOBUFS). The connection stays usable: the next
	// read returns the messages still queued. The kernel does not say how many
	// were lost; see the package documentation on loss.
	ErrOverrun error = &sentinel{msg: "receive buffer overrun: the kernel dropped messages (ENOBUFS); read faster or raise Config.ReadBufferSize"}

	// ErrTruncated reports a datagram larger than the receive buffer. The
	// kernel discards the rest of such a datagram, so it is reported and
	// never delivered cut.
	ErrTruncated error = &sentinel{msg: "datagram larger than the message buffer was discarded; raise Config.MessageBufferSize"}

	// ErrMalformed matches a *MessageError: bytes that are not a valid
	// connector message.
	ErrMalformed error = &sentinel{msg: "malformed connector message"}

	// ErrNotInitialNetNS reports that the kernel refused a message to port 0
	// (ECONNREFUSED): the kernel side of the connector exists only in the
	// initial network namespace, so a socket in any other namespace can talk
	// only to userspace peers in that namespace.
	ErrNotInitialNetNS error = &sentinel{msg: "the netlink connector exists only in the initial network namespace (ECONNREFUSED); open the socket there (Config.NetNS) or run in the host's network namespace"}

	// ErrNoConnector reports a kernel built without CONFIG_CONNECTOR.
	ErrNoConnector error = &sentinel{msg: "this kernel has no netlink connector (build it with CONFIG_CONNECTOR=y)"}

	// ErrNotSupported reports an operation that this system or this kind of
	// Conn (for example a cntest fake) does not support.
	ErrNotSupported error = &sentinel{msg: "operation not supported"}

	// ErrMessageTooLarge reports a payload above the connector's size limit.
	ErrMessageTooLarge error = &sentinel{msg: "message too large"}

	// ErrInvalidConfig reports a Config field or a setter's argument out of
	// range; the error names the field and the range.
	ErrInvalidConfig error = &sentinel{msg: "invalid configuration"}

	// ErrInvalidGroup reports a group number outside 1 to 32.
	ErrInvalidGroup error = &sentinel{msg: "invalid connector group"}
)

// A sentinel is an error value that may also match other well-known errors.
type sentinel struct {
	msg  string
	also []error
}

func (e *sentinel) Error() string { return e.msg }

func (e *sentinel) Is(target error) bool {
	for _, a := range e.also {
		if a == target {
			return true
		}
	}
	return false
}

// An OpError is the error type of every failed operation in this package.
type OpError struct {
	// Op names the operation: "dial", "send", "receive", "join group", ...
	Op string
	// Err is the cause. It unwraps to the sentinel (ErrOverrun, ...) and the
	// system call error (a syscall.Errno) where there is one, so
	// errors.Is(err, os.ErrPermission) works for EPERM.
	Err error
}

func (e *OpError) Error() string { return "connector: " + e.Op + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *OpError) Unwrap() error { return e.Err }

// Timeout reports whether the error is a deadline expiry.
func (e *OpError) Timeout() bool { return errors.Is(e.Err, os.ErrDeadlineExceeded) }

// causeError joins a sentinel and the system error it was derived from, with
// a message that says what to do.
type causeError struct {
	kind  error
	errno error
	msg   string
}

func (e *causeError) Error() string   { return e.msg }
func (e *causeError) Unwrap() []error { return []error{e.kind, e.errno} }

// A MessageError describes bytes that are not a valid connector message. It
// matches ErrMalformed.
type MessageError struct {
	// Reason says what is wrong, for example "header len 40 is larger than
	// the 4 payload bytes that arrived".
	Reason string
	// Sender is who sent the datagram, where it is known.
	Sender Sender
	// HasSender reports whether Sender is known.
	HasSender bool
}

func (e *MessageError) Error() string {
	if e.HasSender {
		return fmt.Sprintf("malformed connector message from %v: %s", e.Sender, e.Reason)
	}
	return "malformed connector message: " + e.Reason
}

// Is makes a *MessageError match ErrMalformed.
func (e *MessageError) Is(target error) bool { return target == ErrMalformed }

func opErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var oe *OpError
	if errors.As(err, &oe) {
		return err
	}
	return &OpError{Op: op, Err: err}
}
