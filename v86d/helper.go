package v86d

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/capcheck"
)

// Timeout is how long uvesafb waits for the reply to a task
// (UVESAFB_TIMEOUT in drivers/video/fbdev/uvesafb.c); then that BIOS call
// fails.
const Timeout = 5 * time.Second

// ErrExit is returned by Helper.Serve when the kernel sent a task with
// FlagExit: uvesafb is being unloaded and the helper it started should exit.
var ErrExit = errors.New("v86d: the kernel asked the helper to exit (TF_EXIT)")

// ErrNoSysAdmin is what Helper.Serve and Helper.Check fail with when the
// process lacks CAP_SYS_ADMIN: uvesafb ignores replies from such processes,
// silently, and each task would time out after 5 s. The error they return
// matches both ErrNoSysAdmin and os.ErrPermission with errors.Is; there is
// no error type to use with errors.As.
var ErrNoSysAdmin = errors.New("v86d: the process lacks CAP_SYS_ADMIN: uvesafb ignores replies from such processes without a word; run as root (joining group 4 also needs CAP_NET_ADMIN)")

// A Call is one task the kernel sent, as a Helper's Handle gets it.
type Call struct {
	// Slot is the kernel's task slot (cn_msg.seq, 0 to 15) and Ack its
	// random cookie (cn_msg.ack); the reply must carry both, which Helper
	// does.
	Slot, Ack uint32
	Task      Task
	// Buf is the task's buffer (Task.BufLen bytes): the kernel's input,
	// for example the vbe_ib pre-filled with "VBE2". It is valid only
	// during Handle, which may modify it and return it.
	Buf []byte
}

// Stats are a Helper's counters.
type Stats struct {
	Tasks, Replies, Malformed, Foreign, SendErrors, Overruns uint64
}

// A Helper is the userspace side of uvesafb: it receives tasks (BIOS calls)
// on group 4 and answers each with the registers, and the buffer, after the
// call. Handle does the work; FakeBIOS is a ready Handle for tests.
//
// Only one process should answer: any process with CAP_SYS_ADMIN that
// listens on group 4 can race the real v86d with its own answers, and the
// kernel takes the first one that matches the task's slot and cookie.
//
// A Helper is safe for concurrent use; it answers one task at a time.
type Helper struct {
	// Handle executes a call and returns the task to send back (the
	// registers after the call; Flags and BufLen are filled in) and the
	// buffer to return: at most the call's BufLen bytes, copied by the
	// kernel only for FlagBufRet and FlagVBEIB tasks. Handle must return
	// well within Timeout. Nil answers every call with AX 0x014f (failed).
	Handle func(c *Call) (Task, []byte)

	// OnExit, if set, is called when a FlagExit task arrives, before
	// Serve returns ErrExit.
	OnExit func()

	// ErrorLog receives what Serve survives (malformed tasks, failed
	// sends, overruns). Nil drops them.
	ErrorLog func(error)

	// SkipPrivilegeCheck makes Serve skip its CAP_SYS_ADMIN check (for
	// fakes such as cntest).
	SkipPrivilegeCheck bool

	mu  sync.Mutex
	buf []byte

	tasks, replies, malformed, foreign, sendErrs, overruns atomic.Uint64
}

// Stats returns the Helper's counters.
func (h *Helper) Stats() Stats {
	return Stats{h.tasks.Load(), h.replies.Load(), h.malformed.Load(), h.foreign.Load(), h.sendErrs.Load(), h.overruns.Load()}
}

func (h *Helper) report(err error) {
	if h.ErrorLog != nil {
		h.ErrorLog(err)
	}
}

// handle answers one message; it reports whether it was a FlagExit task.
func (h *Helper) handle(m connector.Message, from connector.Sender, send func(connector.Message) error) (exit bool) {
	if !from.Kernel() {
		h.foreign.Add(1)
		return false
	}
	if m.ID != connector.IDV86D {
		return false
	}
	t, buf, err := ParseTask(m.Data)
	if err != nil {
		h.malformed.Add(1)
		h.report(fmt.Errorf("v86d: task in slot %d: %w", m.Seq, err))
		return false
	}
	h.tasks.Add(1)
	if t.Flags&FlagExit != 0 {
		if h.OnExit != nil {
			h.OnExit()
		}
		return true
	}
	if m.Seq >= TasksMax {
		h.malformed.Add(1)
		h.report(fmt.Errorf("%w: slot %d, the kernel uses 0 to %d", ErrInvalid, m.Seq, TasksMax-1))
		return false
	}
	c := &Call{Slot: m.Seq, Ack: m.Ack, Task: t, Buf: buf}
	var out Task
	var rbuf []byte
	if h.Handle != nil {
		out, rbuf = h.Handle(c)
	} else {
		out = t
		out.Regs.EAX = out.Regs.EAX&^0xffff | StatusFailed
	}
	if len(rbuf) > int(t.BufLen) {
		h.report(fmt.Errorf("v86d: Handle returned %d buffer bytes for a %d-byte task buffer (function %#04x); cut", len(rbuf), t.BufLen, t.Function()))
		rbuf = rbuf[:t.BufLen]
	}
	out.Flags = t.Flags
	h.mu.Lock()
	b, _ := AppendTask(h.buf[:0], out, rbuf) // len(rbuf) <= BufLen <= MaxBufLen
	h.buf = b
	// Count the reply before it can reach the kernel, so that Stats never
	// lags behind what a peer has already seen; a failed send takes it back.
	h.replies.Add(1)
	err = send(connector.Message{ID: connector.IDV86D, Seq: m.Seq, Ack: m.Ack, Data: b})
	h.mu.Unlock()
	if err != nil {
		h.replies.Add(^uint64(0))
		h.sendErrs.Add(1)
		h.report(fmt.Errorf("v86d: replying to function %#04x in slot %d: %w", t.Function(), m.Seq, err))
	}
	return false
}

// Serve answers tasks on c until ctx is done, c is closed, or a FlagExit
// task arrives (ErrExit). It first runs Check, and fails at once with its
// error; then it joins group 4 if c has not (which needs CAP_NET_ADMIN). A
// nil ctx is an error that says so, before anything else.
func (h *Helper) Serve(ctx context.Context, c *connector.Conn) error {
	if ctx == nil {
		return errors.New("v86d: serve: ctx is nil: give it a context.Context (context.Background() to serve until c is closed)")
	}
	if err := h.check(c, "serve"); err != nil {
		return err
	}
	if err := join(c, connector.IDV86D.Group()); err != nil {
		return capcheck.Wrap("v86d", "serve", "joining group 4 (needs CAP_NET_ADMIN)", err)
	}
	return h.serve0(ctx, c)
}

// Check tells whether Serve could answer the kernel's tasks on c, so that
// a program can say it serves only when it can. It fails with an error
// matching ErrNoSysAdmin and os.ErrPermission when the process lacks
// CAP_SYS_ADMIN (unless SkipPrivilegeCheck), and with one matching
// connector.ErrNoAgent, naming the module to load (uvesafb), when the
// kernel that c reaches lists its agents and uvesafb's (id 4:1) is not
// among them: no task would ever come.
//
// Its errors read "v86d: check: ..." (Serve's "v86d: serve: ...").
func (h *Helper) Check(c *connector.Conn) error { return h.check(c, "check") }

func (h *Helper) check(c *connector.Conn, op string) error {
	if !h.SkipPrivilegeCheck {
		if err := capcheck.RequireSysAdmin("v86d", op, ErrNoSysAdmin); err != nil {
			return err
		}
	}
	return capcheck.RequireAgent(c, "v86d", op, connector.IDV86D)
}

func join(c *connector.Conn, g connector.Group) error {
	if gs, err := c.Groups(); err == nil {
		for _, x := range gs {
			if x == g {
				return nil
			}
		}
	}
	return c.JoinGroup(g)
}

// ServeConnector answers one task: register the Helper on a connector.Mux
// for connector.IDV86D to serve it next to other agents. It cannot end the
// Mux's Serve on FlagExit: use OnExit for that. Run Check on the Conn
// first: a Mux does not.
func (h *Helper) ServeConnector(req connector.Request) {
	h.handle(req.Msg, req.From, req.Reply)
}

// serve0 serves c through a connector.Mux until a FlagExit task.
func (h *Helper) serve0(ctx context.Context, c *connector.Conn) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	mx := connector.NewMux()
	mx.HandleFunc(connector.IDV86D, func(req connector.Request) {
		if h.handle(req.Msg, req.From, req.Reply) {
			cancel(ErrExit)
		}
	})
	err := mx.Serve(ctx, c, &connector.ServeOptions{OnError: func(err error) {
		if errors.Is(err, connector.ErrOverrun) {
			h.overruns.Add(1)
			h.report(fmt.Errorf("v86d: %w: tasks were lost and will time out in the kernel", err))
			return
		}
		h.report(err)
	}})
	if cause := context.Cause(ctx); errors.Is(cause, ErrExit) {
		return ErrExit
	}
	return err
}
