package proc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cnlink/connector"
)

// CheckEvents asks the kernel whether it generates process events at all.
// It returns nil if it does, and an error matching ErrEventsOff if the
// kernel's global listener count is below 1: then no event is built for any
// listener, and no listener's stream shows it, neither by a gap nor by a
// drop (see "Loss no socket sees" in the package documentation). Call it
// now and then where such silence matters; after ErrEventsOff, a Listener's
// Rearm turns events back on.
//
// The evidence is the kernel's own: it acknowledges a subscription request
// only while its listener count is at least 1 (drivers/connector/cn_proc.c,
// cn_proc_ack). CheckEvents sends a request that changes no count (an
// invalid operation, which the kernel answers with EINVAL, or EPERM before
// Linux 6.6 without CAP_NET_ADMIN) on a socket of its own that keeps only
// acknowledgements (a classic BPF socket filter), and waits for the answer
// until ctx ends: give ctx a deadline, a second is plenty. A request sent
// again after an overrun is sent at most twice more.
//
// c is the Conn to use, not one a Listener reads: CheckEvents joins it to
// group 1, sets its socket filter and leaves it open (the caller closes it).
// nil means a socket of its own, closed before it returns. A nil ctx is an
// error that says so, and nothing is sent. Errors: those of Listen for a process that cannot subscribe
// (ErrNamespace, ErrNoProcEvents, connector.ErrNotInitialNetNS,
// os.ErrPermission before 6.6 without CAP_NET_ADMIN), ctx's error if it ends
// before the request is sent, and ErrEventsOff.
func CheckEvents(ctx context.Context, c *connector.Conn) error {
	if ctx == nil {
		return nilCtx("check events")
	}
	c, done, err := probeConn(c)
	if err != nil {
		return wrapErr("check events", err)
	}
	defer done()
	if err := checkOn(ctx, c); err != nil {
		return wrapErr("check events", err)
	}
	return nil
}

// probeConn readies c for checkOn, or opens a socket for it if c is nil;
// done closes what it opened.
func probeConn(c *connector.Conn) (_ *connector.Conn, done func(), err error) {
	if err := namespaceCheck(); err != nil {
		return nil, nil, err
	}
	done = func() {}
	if c == nil {
		if err := checkProcEvents(); err != nil {
			return nil, nil, err
		}
		own, err := connector.Dial(&connector.Config{
			Groups:            []connector.Group{connector.IDProc.Group()},
			Senders:           connector.SendersKernelOnly,
			MessageBufferSize: MessageBufferSize,
		})
		if err != nil {
			return nil, nil, err
		}
		c, done = own, func() { own.Close() }
	} else if err := checkConn(c); err != nil {
		return nil, nil, err
	}
	// Without the filter (a fake kernel's Conn) the events reach the
	// socket too, and the acknowledgement is found among them.
	_ = c.SetBPF(onlyAcks)
	return c, done, nil
}

// checkOn is CheckEvents on a Conn that probeConn readied.
func checkOn(ctx context.Context, c *connector.Conn) error {
	for try := 0; try < 3; try++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		before := c.Stats().Overruns
		_, _, err := connector.Call(ctx, c, requestMessage(opInvalid, 0, false, nonce()), connector.Destination{}, matchAck)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, connector.ErrNoAgent):
			return &noAgentError{err}
		case !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled):
			return err
		case c.Stats().Overruns == before:
			if unknown := namespaceUnknown(); unknown != "" {
				return fmt.Errorf("%w, or the kernel ignored the request because this process is outside the initial user or PID namespace, which could not be determined: %s", ErrEventsOff, unknown)
			}
			return fmt.Errorf("no acknowledgement before the deadline: %w", ErrEventsOff)
		}
	}
	return fmt.Errorf("every acknowledgement was lost to a receive buffer overrun; %w", ErrEventsOff)
}

// Rearm makes the kernel generate events again after CheckEvents reported
// ErrEventsOff: it raises the kernel's global listener count until a check
// (CheckEvents, on probe) finds events on, or ctx ends. The count can have
// been driven far below 0, so it raises it in batches that double (1, 2,
// 4, ...), checking after each with a wait of at most 200 ms: the count
// ends at most about twice as high as needed, which keeps events flowing
// after Close and costs no listener anything. It keeps the Listener's
// subscription as it was. On Linux 6.6 and later each step is, on the
// Listener's socket, an invalid request and then LISTEN again with the
// same filter, since a LISTEN raises the count only after a request that
// was not a LISTEN (cn_proc_mcast_ctl); before 6.6 each step is a LISTEN,
// which always raises it (and needs CAP_NET_ADMIN).
//
// probe is as CheckEvents' c (nil: a socket of its own). Rearm is safe to
// call from any goroutine. It returns nil once events are on; ctx's error,
// with ErrEventsOff, if they are still off when ctx ends; an error matching
// connector.ErrClosed after Close; a nil ctx is an error that says so.
func (l *Listener) Rearm(ctx context.Context, probe *connector.Conn) error {
	if ctx == nil {
		return nilCtx("rearm")
	}
	if l.closed.Load() {
		return fmt.Errorf("proc: rearm: %w", connector.ErrClosed)
	}
	probe, done, err := probeConn(probe)
	if err != nil {
		return wrapErr("rearm", err)
	}
	defer done()
	for n := 1; ; n = min(2*n, 1<<20) {
		for range n {
			if err := l.raise(); err != nil {
				return wrapErr("rearm", err)
			}
		}
		step, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		err := checkOn(step, probe)
		cancel()
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, ErrEventsOff):
			if ctx.Err() != nil {
				return fmt.Errorf("proc: rearm: %w: %w", ctx.Err(), ErrEventsOff)
			}
			return wrapErr("rearm", err)
		case ctx.Err() != nil:
			return fmt.Errorf("proc: rearm: %w: %w", ctx.Err(), ErrEventsOff)
		}
	}
}

// raise raises the kernel's listener count by one (see Rearm).
func (l *Listener) raise() error {
	if l.closed.Load() {
		return connector.ErrClosed
	}
	if l.sub.input {
		if err := l.c.Send(requestMessage(opInvalid, l.sub.filter, true, nonce())); err != nil {
			return err
		}
	}
	return l.c.Send(requestMessage(opListen, l.sub.filter, l.sub.input, nonce()))
}
