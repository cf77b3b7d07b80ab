package connector

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"
)

// Send sends m to the kernel (port 0), where the agent registered for m.ID
// receives it. Anyone may send to the kernel; each agent checks privileges
// itself. The payload may be at most MaxKernelPayload bytes: the kernel
// silently drops larger messages. The error matches ErrNotInitialNetNS when
// the socket is not in the initial network namespace.
//
// A message for an id that no kernel agent registered is dropped by the
// kernel without a word, and Send returns nil: a successful Send means the
// kernel took the datagram, not that an agent heard it. [Conn.Agents] lists
// the registered ids, and [Call] and [Exchange] check them first and fail
// at once with [ErrNoAgent].
func (c *Conn) Send(m Message) error {
	if len(m.Data) > MaxKernelPayload {
		return &OpError{Op: "send", Err: fmt.Errorf("%w: payload of %d bytes exceeds the %d bytes the kernel accepts (CONNECTOR_MAX_MSG_SIZE minus the header); the kernel would drop it silently", ErrMessageTooLarge, len(m.Data), MaxKernelPayload)}
	}
	return c.send("send", m, 0, 0)
}

// SendTo sends m by unicast to the userspace socket with the given port id.
// This needs CAP_NET_ADMIN (the error matches os.ErrPermission otherwise). If
// the receiver's buffer is full the call waits for room, until the write
// deadline. Port 0 is the kernel's, no userspace socket's: SendTo(0, m)
// fails with an error matching [ErrInvalidDestination] and sends nothing
// (use Send for the kernel).
func (c *Conn) SendTo(port uint32, m Message) error {
	if port == 0 {
		return &OpError{Op: "send", Err: errPortZero("SendTo(0, m)", "Send")}
	}
	return c.send("send", m, port, 0)
}

// Multicast sends m to every other socket that joined group g (the sender
// never receives its own multicast). This needs CAP_NET_ADMIN. The kernel also
// hands the message to the kernel agent registered for m.ID, if any, which is
// why a multicast from outside the initial network namespace fails with
// ErrNotInitialNetNS after it was delivered to the group.
func (c *Conn) Multicast(g Group, m Message) error {
	if err := g.check(); err != nil {
		return opErr("multicast", err)
	}
	return c.send("multicast", m, 0, g.Mask())
}

func (c *Conn) send(op string, m Message, port, groups uint32) error {
	if err := c.checkOpen(op); err != nil {
		return err
	}
	if c.kw != nil && len(m.Data) <= stackSendPayload {
		return c.sendStack(op, m, port, groups)
	}
	bp := c.sendBuf.get()
	b, err := appendNetlink((*bp)[:0], m, c.port)
	if err != nil {
		c.sendBuf.put(bp)
		return opErr(op, err)
	}
	err = c.t.Send(b, port, groups)
	if err != nil {
		err = c.sendRetry(b, port, groups, err)
	}
	// appendNetlink bounds the payload by MaxMessageSize, so a grown
	// buffer stays small enough to keep.
	*bp = b
	c.sendBuf.put(bp)
	if err != nil {
		return opErr(op, c.mapSendErr(err, port, groups))
	}
	return nil
}

// stackSendPayload is the largest payload a KernelWait Conn sends from a
// datagram built on the caller's stack: small enough that clearing the
// array costs less than taking a buffer from the pool.
const stackSendPayload = 256

// sendStack is send for a KernelWait Conn and a payload of at most
// stackSendPayload bytes: the datagram is built on the stack and sent by
// the socket itself (fdConn.sendto), without the pool's two atomic swaps
// and the transport's interface call. Nothing here may pass the datagram
// to an interface method, or the array would move to the heap.
func (c *Conn) sendStack(op string, m Message, port, groups uint32) error {
	var buf [nlmsgHeaderLen + HeaderLen + stackSendPayload]byte
	b, err := appendNetlink(buf[:0], m, c.port)
	if err != nil {
		return opErr(op, err)
	}
	err = c.kw.sendto(b, port, groups)
	for try := 0; err != nil && (errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR)); try++ {
		// As sendRetry: fdConn.sendto has waited a slice in the kernel
		// for room in a full receiver.
		if c.closed.Load() {
			err = errClosed
			break
		}
		if d := c.wdeadline.Load(); d != 0 && time.Now().UnixNano() >= d {
			err = errWriteDeadline
			break
		}
		if try < sendSpins {
			runtime.Gosched()
		}
		err = c.kw.sendto(b, port, groups)
	}
	if err != nil {
		return opErr(op, c.mapSendErr(err, port, groups))
	}
	return nil
}

// sendRetry handles the error of a first send: while a unicast receiver's
// queue is full (EAGAIN) it sends again until there is room, the Conn is
// closed or the write deadline passes: it yields a few times (a receiver
// that is reading makes room within microseconds), then waits in the
// transport in short slices.
func (c *Conn) sendRetry(b []byte, port, groups uint32, err error) error {
	for try := 0; errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR); try++ {
		if c.closed.Load() {
			return errClosed
		}
		if d := c.wdeadline.Load(); d != 0 && time.Now().UnixNano() >= d {
			return errWriteDeadline
		}
		if try < sendSpins {
			runtime.Gosched()
			err = c.t.Send(b, port, groups)
		} else {
			err = c.t.SendWait(b, port, groups)
		}
	}
	return err
}

// sendSpins is how many times a send to a full receiver yields and retries
// before it waits.
const sendSpins = 4

var errWriteDeadline = fmt.Errorf("write deadline exceeded while the receiver's queue was full: %w", os.ErrDeadlineExceeded)

// SetWriteDeadline sets the deadline for sends. Only a unicast to a
// userspace socket whose receive buffer is full ever waits (sends to the
// kernel and multicasts never do); such a send notices the deadline, or
// Close, at the end of its 10 ms wait slice, which the kernel rounds up to
// clock ticks (12 ms at CONFIG_HZ=250): see [Config.KernelWait].
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if err := c.checkOpen("set write deadline"); err != nil {
		return err
	}
	if t.IsZero() {
		c.wdeadline.Store(0)
	} else {
		c.wdeadline.Store(t.UnixNano())
	}
	return opErr("set write deadline", c.mapErr(c.t.SetWriteDeadline(t), "set write deadline"))
}
