package connector

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"

	"github.com/cnlink/connector/internal/transport"
)

// Sentinel errors; test for them with errors.Is. The errors this package
// returns wrap them, together with the system call's errno where there is
// one (so errors.Is(err, os.ErrPermission) works for EPERM).
var (
	// ErrClosed matches every error of a call on a Conn (or its Readers)
	// after Close. Those errors also match os.ErrClosed and net.ErrClosed.
	ErrClosed = errors.New("use of closed connector connection")

	// ErrOverrun reports that the socket's receive buffer overflowed and the
	// kernel dropped messages (ENOBUFS). The connection stays usable: the next
	// read returns the messages still queued. The kernel does not say how many
	// were lost; see the package documentation on loss.
	ErrOverrun = errors.New("overrun: the socket's receive buffer was full and the kernel dropped messages (ENOBUFS); read faster or raise Config.ReadBufferSize")

	// ErrTruncated reports a datagram larger than the receive buffer. The
	// kernel discards the rest of such a datagram, so it is reported and
	// never delivered cut.
	ErrTruncated = errors.New("datagram larger than the message buffer")

	// ErrMalformed matches a *MessageError: bytes that are not a valid
	// connector message.
	ErrMalformed = errors.New("malformed connector message")

	// ErrNotInitialNetNS reports that the kernel refused a message to port 0
	// (ECONNREFUSED): the kernel side of the connector exists only in the
	// initial network namespace, so a socket in any other namespace can talk
	// only to userspace peers in that namespace.
	ErrNotInitialNetNS = errors.New("the netlink connector exists only in the initial network namespace (ECONNREFUSED); open the socket there (Config.NetNS) or run in the host's network namespace")

	// ErrNoConnector reports a kernel built without CONFIG_CONNECTOR.
	ErrNoConnector = errors.New("this kernel has no netlink connector (build it with CONFIG_CONNECTOR=y)")

	// ErrNotSupported reports an operation that this system or this kind of
	// Conn (for example a cntest fake) does not support.
	ErrNotSupported = errors.New("operation not supported")

	// ErrMessageTooLarge reports a payload above the connector's size limit.
	ErrMessageTooLarge = errors.New("message too large")

	// ErrInvalidGroup reports a group number outside 1 to 32.
	ErrInvalidGroup = errors.New("invalid connector group")

	// ErrInvalidDestination reports a destination that names no socket: a
	// unicast to port 0 ([Conn.SendTo], [ToPort]), which is the kernel's
	// port and no userspace socket's, or a [Destination] with both a port
	// and a group. Send to the kernel with [Conn.Send] or the zero
	// Destination.
	ErrInvalidDestination = errors.New("invalid destination")

	// ErrInvalidConfig reports a Config field or a setter's argument out of
	// range; the error names the field and the range.
	ErrInvalidConfig = errors.New("invalid configuration")
)

// errClosed is the cause of every error after Close: it reads as ErrClosed
// and matches ErrClosed, os.ErrClosed and net.ErrClosed.
var errClosed = closedError{}

type closedError struct{}

func (closedError) Error() string   { return ErrClosed.Error() }
func (closedError) Unwrap() []error { return []error{ErrClosed, os.ErrClosed, net.ErrClosed} }

// errNoConn is the cause of every error of a method of a nil or zero-value
// *Conn, one that Dial did not open: it matches os.ErrInvalid, as the
// methods of a nil *os.File do.
var errNoConn = fmt.Errorf("nil or zero-value *Conn (%w): open one with Dial, or a cntest Kernel's Dial", os.ErrInvalid)

// errReleased is the cause of the errors of a Reader after Release while
// its Conn is open: it matches what errClosed matches, and says what was
// released.
var errReleased = releasedError{}

type releasedError struct{}

func (releasedError) Error() string {
	return "use of a released Reader: Release gave its buffers back (the Conn is still open; get another Reader with NewReader)"
}
func (releasedError) Unwrap() []error { return []error{ErrClosed, os.ErrClosed, net.ErrClosed} }

// closedErr is the error of a Reader's call after Release or Close.
func (r *Reader) closedErr() error {
	if !r.c.usable() {
		return &OpError{Op: "receive", Err: errNoConn}
	}
	if r.b == nil && !r.c.isClosed() {
		return &OpError{Op: "receive", Err: errReleased}
	}
	return &OpError{Op: "receive", Err: errClosed}
}

// An OpError is the error of a failed method of a Conn or a Reader: it
// names the operation and is the only place where the "connector:" prefix
// is written. Functions that are not methods (GroupMask,
// [Message.UnmarshalBinary], ParseMessages) return their cause without it.
type OpError struct {
	// Op names the operation: "dial", "send", "receive", "join group", ...
	Op string
	// Err is the cause. It unwraps to the sentinel (ErrOverrun, ...) and the
	// system call error (a syscall.Errno) where there is one.
	Err error
}

func (e *OpError) Error() string { return "connector: " + e.Op + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *OpError) Unwrap() error { return e.Err }

// Timeout reports whether the error is a deadline expiry.
func (e *OpError) Timeout() bool { return errors.Is(e.Err, os.ErrDeadlineExceeded) }

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

// opErr wraps err in an *OpError for op, unless it is nil or already one.
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

// joinNeeds is what joining a group takes (cn_bind in
// drivers/connector/connector.c): said in every error that refuses a join.
const joinNeeds = "needs CAP_NET_ADMIN (without it, Linux 6.6 and later allow odd-numbered groups only, and older kernels none)"

// The functions below turn the transports' bare errors into the messages
// users read: each message is written here, once.

// mapErr maps an error of a transport call made for op.
func (c *Conn) mapErr(err error, op string) error {
	switch {
	case err == nil:
		return nil
	case c.closed.Load() || errors.Is(err, os.ErrClosed):
		return errClosed
	case errors.Is(err, transport.ErrUnsupported):
		return fmt.Errorf("%w by this connection: its transport does not model it (a cntest fake socket has no BPF filter and no file descriptor)", ErrNotSupported)
	case errors.Is(err, syscall.ENOBUFS):
		return fmt.Errorf("%w (%w)", ErrOverrun, err)
	case errors.Is(err, syscall.EPERM):
		return fmt.Errorf("%s needs CAP_NET_ADMIN: %w", op, err)
	}
	return err
}

// mapSendErr maps an error of a send to port (0: the kernel) or, with
// port 0, to the groups of a multicast bitmask.
func (c *Conn) mapSendErr(err error, port, groups uint32) error {
	switch {
	case errors.Is(err, os.ErrClosed) || c.closed.Load():
		return errClosed
	case errors.Is(err, syscall.ECONNREFUSED) && port == 0:
		return fmt.Errorf("%w (%w)", ErrNotInitialNetNS, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("no socket has port id %d (or it is connected to another peer): %w", port, err)
	case errors.Is(err, syscall.EPERM) && groups != 0:
		return fmt.Errorf("multicasting on group %d needs CAP_NET_ADMIN; only messages to the kernel (port 0) are unprivileged: %w", groupFromMask(groups), err)
	case errors.Is(err, syscall.EPERM) && port != 0:
		return fmt.Errorf("sending to userspace port %d needs CAP_NET_ADMIN; only messages to the kernel (port 0) are unprivileged: %w", port, err)
	case errors.Is(err, syscall.EMSGSIZE):
		return fmt.Errorf("%w: the datagram is larger than the socket's send buffer; raise it with SetWriteBuffer: %w", ErrMessageTooLarge, err)
	}
	return err
}

// mapDialErr maps an error of opening the socket: an *os.SyscallError that
// names the step.
func mapDialErr(err error, cfg *Config) error {
	var se *os.SyscallError
	step := ""
	if errors.As(err, &se) {
		step = se.Syscall
	}
	switch {
	case errors.Is(err, transport.ErrUnsupported) && cfg.NetNS != 0:
		return fmt.Errorf("%w: this transport cannot open a socket in another network namespace (Config.NetNS); a cntest Kernel models one with Options.NotInitialNetNS", ErrNotSupported)
	case errors.Is(err, transport.ErrUnsupported):
		return fmt.Errorf("%w by this transport", ErrNotSupported)
	case errors.Is(err, syscall.EPROTONOSUPPORT) || errors.Is(err, syscall.EAFNOSUPPORT):
		return fmt.Errorf("%w: %w", ErrNoConnector, err)
	case step == "setns" && errors.Is(err, syscall.EPERM):
		return fmt.Errorf("entering the network namespace of Config.NetNS (fd %d) needs CAP_SYS_ADMIN: %w", cfg.NetNS, err)
	case step == "setns":
		return fmt.Errorf("%w: Config.NetNS (fd %d) is not an open network namespace file descriptor (%w)", ErrInvalidConfig, cfg.NetNS, err)
	case errors.Is(err, syscall.EPERM):
		return fmt.Errorf("joining %s %s: %w", describeGroups(cfg.Groups), joinNeeds, err)
	}
	return err
}

// describeGroups names the groups of Config.Groups for a refused join,
// and which of them are even-numbered, the ones Linux 6.6 and later refuse
// without CAP_NET_ADMIN: "groups 21, 22 and 24 (Config.Groups; 22 and 24
// are even-numbered)".
func describeGroups(gs []Group) string {
	var even []Group
	for _, g := range gs {
		if g%2 == 0 {
			even = append(even, g)
		}
	}
	s := "group " + listGroups(gs)
	if len(gs) > 1 {
		s = "groups " + listGroups(gs)
	}
	switch {
	case len(even) == 1:
		return s + " (Config.Groups; " + listGroups(even) + " is even-numbered)"
	case len(even) > 1:
		return s + " (Config.Groups; " + listGroups(even) + " are even-numbered)"
	}
	return s + " (Config.Groups)"
}

// listGroups writes gs as "1", "1 and 2" or "1, 2 and 3".
func listGroups(gs []Group) string {
	var b []byte
	for i, g := range gs {
		switch {
		case i == 0:
		case i == len(gs)-1:
			b = append(b, " and "...)
		default:
			b = append(b, ", "...)
		}
		b = strconv.AppendUint(b, uint64(g), 10)
	}
	return string(b)
}
