package dmlog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/capcheck"
)

// RetryTimeout is how long the kernel waits for a reply before it resends
// the request under a new sequence number (DM_ULOG_RETRY_TIMEOUT in
// drivers/md/dm-log-userspace-transfer.c).
const RetryTimeout = 15 * time.Second

// ReconnectInterval is how often the kernel re-sends the constructor of a
// log whose server is gone (userspace_do_request in
// drivers/md/dm-log-userspace-base.c).
const ReconnectInterval = 2 * time.Second

// ErrNoSysAdmin is what Server.Serve and Server.Check fail with when the
// process lacks CAP_SYS_ADMIN: the kernel would ignore every reply,
// silently, and the mirror's I/O would hang. The error they return matches
// both ErrNoSysAdmin and os.ErrPermission with errors.Is; there is no error
// type to use with errors.As.
var ErrNoSysAdmin = errors.New("dmlog: the process lacks CAP_SYS_ADMIN: dm-log-userspace ignores replies from such processes without a word, and the mirror would hang; run as root or grant CAP_SYS_ADMIN (and CAP_NET_ADMIN before Linux 6.6 to join group 7)")

// A Ctr is a log constructor request, as Server.New receives it.
type Ctr struct {
	UUID string
	LUID uint64
	// Sectors is the mirror's length in 512-byte sectors.
	Sectors uint64
	// Args are the log arguments of the table line after the uuid (and
	// after integrated_flush, which the kernel handles itself): for
	// "userspace 3 <uuid> core 1024", ["core", "1024"].
	Args []string
	// Again is true when the Server already had this log: the kernel
	// re-sent the constructor because it took the server for gone (after
	// a restart, or a receive overrun that lost a request). The old Log has
	// been closed; the new one must rebuild the state (a MemLog starts
	// anew, which makes the kernel resynchronise the mirror).
	Again bool
	// Resent is true when the kernel re-sent the constructor of an
	// existing mirror (its string ends in a NUL, which only the kernel's
	// reconnect loop adds): the kernel lost its server, and writes may have
	// happened whose marks no log kept. The log should then treat every
	// region as out of sync, as the default MemLog does.
	Resent bool
}

// A Trace describes one request a Server answered, for Server.Trace.
type Trace struct {
	Request Header
	// DataLen is the request's data length.
	DataLen int
	// Errno is the error replied (0 for success); Ack reports a reply
	// without payload (cn_msg.ack carried Errno).
	Errno syscall.Errno
	Ack   bool
	// ReplyLen is the reply's data length.
	ReplyLen int
	// Took is the time from receipt to the reply's send.
	Took time.Duration
	// Err is why the request was answered with an error, or why the reply
	// could not be sent.
	Err error
}

// ServerStats are a Server's counters.
type ServerStats struct {
	// Requests received from the kernel, Replies sent.
	Requests, Replies uint64
	// Unparsable requests, answered with an EAGAIN ack (EINVAL for a
	// well-formed header with an unknown request type).
	Unparsable uint64
	// Errors: replies carrying an errno; SendErrors: replies that could
	// not be sent.
	Errors, SendErrors uint64
	// Reconstructed counts CTRs of logs the server already had.
	Reconstructed uint64
	// UnknownLog counts requests for logs the server does not have,
	// answered with ESRCH so that the kernel re-sends the constructor.
	UnknownLog uint64
	// Foreign counts messages not sent by the kernel, ignored.
	Foreign uint64
	// Overruns counts receive overruns seen by Serve.
	Overruns uint64
	// Logs is the number of logs the server holds.
	Logs int
}

// A Server answers dm-log-userspace requests with one Log per mirror.
//
// Use Serve to run it on a Conn, or register it on a connector.Mux for
// connector.IDDM next to other handlers. The zero value serves MemLogs
// built from each mirror's table arguments (NewCoreLog).
//
// A Server is safe for concurrent use; it answers requests one at a time.
type Server struct {
	// New creates the Log for a constructor request and may name a
	// device for the kernel to open as the log device (at most 127 bytes;
	// "" for none). Nil means NewCoreLog(ctr.Sectors, ctr.Args), with
	// every region out of sync for a constructor that comes Again or
	// Resent (nosync then applies only to the first load). An error
	// is replied as the constructor's error (a syscall.Errno as itself,
	// anything else as EINVAL) and fails the table load.
	New func(ctr Ctr) (Log, string, error)

	// ErrorLog receives what the Server survives: unparsable requests,
	// Log errors, replies that could not be sent, receive overruns. Nil
	// drops them; ServerStats counts them either way.
	ErrorLog func(error)

	// Trace, if set, is called after every answered request.
	Trace func(Trace)

	// SkipPrivilegeCheck makes Serve skip its CAP_SYS_ADMIN check, for
	// fakes such as cntest, where the check means nothing.
	SkipPrivilegeCheck bool

	mu      sync.Mutex // serialises requests; guards buf, scratch and regs
	logsMu  sync.Mutex // guards logs, so that Log methods may call Stats and Log
	logs    map[logKey]Log
	buf     []byte // the reply
	scratch []byte // the reply's data
	regs    []uint64
	// lastUUID is the uuid of the last request, reused for the next one
	// of the same mirror so that parsing it allocates nothing.
	lastUUID atomic.Pointer[uuidString]

	requests, replies, unparsable, errs, sendErrs, reconstructed, unknown, foreign, overruns atomic.Uint64
}

func (s *Server) lookup(k logKey) (Log, bool) {
	s.logsMu.Lock()
	defer s.logsMu.Unlock()
	l, ok := s.logs[k]
	return l, ok
}

// setLog sets or, for nil, removes the log of k.
func (s *Server) setLog(k logKey, l Log) {
	s.logsMu.Lock()
	defer s.logsMu.Unlock()
	if l == nil {
		delete(s.logs, k)
		return
	}
	if s.logs == nil {
		s.logs = make(map[logKey]Log)
	}
	s.logs[k] = l
}

type uuidString struct{ s string }

func (u *uuidString) get() string {
	if u == nil {
		return ""
	}
	return u.s
}

type logKey struct {
	uuid string
	luid uint64
}

// Stats returns the Server's counters.
func (s *Server) Stats() ServerStats {
	s.logsMu.Lock()
	n := len(s.logs)
	s.logsMu.Unlock()
	return ServerStats{
		Requests: s.requests.Load(), Replies: s.replies.Load(), Unparsable: s.unparsable.Load(),
		Errors: s.errs.Load(), SendErrors: s.sendErrs.Load(), Reconstructed: s.reconstructed.Load(),
		UnknownLog: s.unknown.Load(), Foreign: s.foreign.Load(), Overruns: s.overruns.Load(), Logs: n,
	}
}

// Log returns the log the Server holds for a mirror, if any.
func (s *Server) Log(uuid string, luid uint64) (Log, bool) {
	s.logsMu.Lock()
	defer s.logsMu.Unlock()
	l, ok := s.logs[logKey{uuid, luid}]
	return l, ok
}

// Close closes every log the Server holds and forgets them; call it after
// Serve has returned, since a request being served may still use a log. The
// kernel
// still has its mirrors: if they are used again, it re-sends their
// constructors to whichever server then listens.
func (s *Server) Close() error {
	s.logsMu.Lock()
	defer s.logsMu.Unlock()
	var errs []error
	for k, l := range s.logs {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("dmlog: closing log %q: %w", k.uuid, err))
		}
		delete(s.logs, k)
	}
	return errors.Join(errs...)
}

func (s *Server) report(err error) {
	if s.ErrorLog != nil && err != nil {
		s.ErrorLog(err)
	}
}

// Handle answers one message. send delivers a reply to the kernel. It is
// the core of ServeConnector, usable with any receive loop.
func (s *Server) handle(m connector.Message, from connector.Sender, send func(connector.Message) error) {
	if !from.Kernel() {
		s.foreign.Add(1)
		return
	}
	if m.ID != connector.IDDM {
		return
	}
	start := time.Now()
	s.requests.Add(1)
	req, err := parseRequest(m.Data, s.lastUUID.Load().get())
	if err != nil {
		s.unparsable.Add(1)
		// A well-formed header with a type this package does not know
		// (a newer kernel) is refused: EAGAIN would make the kernel resend
		// it forever. Anything else is answered EAGAIN. The log names the
		// answer actually sent.
		errno := syscall.EAGAIN
		if !req.Type.Valid() && len(m.Data) >= HeaderLen && errors.Is(err, ErrInvalid) {
			errno = syscall.EINVAL
		}
		s.report(fmt.Errorf("dmlog: unparsable request seq %d (%d bytes), answered %s: %w", m.Seq, len(m.Data), errnoName(errno), err))
		s.ack(m.Seq, errno, send, Trace{Request: req.Header, DataLen: len(m.Data), Err: err}, start)
		return
	}
	if req.UUID != s.lastUUID.Load().get() {
		s.lastUUID.Store(&uuidString{req.UUID})
	}
	s.mu.Lock()
	data, errno, herr := s.serve(req)
	b, err := AppendReply(s.buf[:0], req.Header, errno, data)
	if err != nil {
		// A Log returned more than the kernel accepts.
		herr = fmt.Errorf("dmlog: %v reply for %q: %w", req.Type, req.UUID, err)
		errno = syscall.EIO
		b, _ = AppendReply(s.buf[:0], req.Header, errno, nil)
	}
	s.buf = b
	s.count(errno)
	err = send(connector.Message{ID: connector.IDDM, Seq: m.Seq, Data: b})
	s.mu.Unlock()
	s.finish(Trace{Request: req.Header, DataLen: len(req.Data), Errno: errno, ReplyLen: len(b) - HeaderLen, Err: herr}, err, start)
}

func (s *Server) ack(seq uint32, errno syscall.Errno, send func(connector.Message) error, t Trace, start time.Time) {
	t.Errno, t.Ack = errno, true
	s.count(errno)
	err := send(connector.Message{ID: connector.IDDM, Seq: seq, Ack: uint32(errno)})
	s.finish(t, err, start)
}

// count records a reply before it is sent, so that Stats never lags what
// the kernel (or a test playing it) has already seen; finish takes the reply
// back if the send fails.
func (s *Server) count(errno syscall.Errno) {
	if errno != 0 {
		s.errs.Add(1)
	}
	s.replies.Add(1)
}

func (s *Server) finish(t Trace, sendErr error, start time.Time) {
	t.Took = time.Since(start)
	if t.Err != nil && !t.Ack {
		s.report(t.Err)
	}
	if sendErr != nil {
		s.replies.Add(^uint64(0))
		s.sendErrs.Add(1)
		sendErr = fmt.Errorf("dmlog: sending the reply to %v seq %d: %w", t.Request.Type, t.Request.Seq, sendErr)
		s.report(sendErr)
		if t.Err == nil {
			t.Err = sendErr
		}
	}
	if t.Took > RetryTimeout {
		s.report(fmt.Errorf("dmlog: %v seq %d answered after %v, past the kernel's %v: it has resent the request", t.Request.Type, t.Request.Seq, t.Took.Round(time.Millisecond), RetryTimeout))
	}
	if s.Trace != nil {
		s.Trace(t)
	}
}

// serve runs one parsed request against its log, with s.mu held. The
// returned data is in s.scratch or nil.
func (s *Server) serve(req Request) (data []byte, errno syscall.Errno, err error) {
	key := logKey{req.UUID, req.LUID}
	if req.Type == TypeCtr {
		return s.construct(key, req)
	}
	l, ok := s.lookup(key)
	if !ok {
		if req.Type == TypeDtr {
			return nil, 0, nil // already gone: a repeated DTR
		}
		s.unknown.Add(1)
		// ESRCH makes userspace_do_request re-send the constructor (every
		// 2 s) and RESUME, then this request: the restart protocol.
		return nil, syscall.ESRCH, fmt.Errorf("dmlog: %v for unknown log %q luid %#x: answered ESRCH so that the kernel re-sends the constructor", req.Type, req.UUID, req.LUID)
	}
	scratch := s.scratch[:0]
	defer func() {
		if cap(data) > cap(s.scratch) {
			s.scratch = data[:0] // keep the grown buffer
		}
	}()
	switch req.Type {
	case TypeDtr:
		s.setLog(key, nil)
		if err := l.Close(); err != nil {
			return nil, 0, fmt.Errorf("dmlog: closing log %q: %w", req.UUID, err)
		}
		return nil, 0, nil
	case TypePresuspend, TypePostsuspend:
		return logErr(req, l.Suspend(req.Type == TypePresuspend))
	case TypeResume:
		return logErr(req, l.Resume())
	case TypeGetRegionSize:
		return AppendUint64(scratch, l.RegionSize()), 0, nil
	case TypeIsClean, TypeInSync:
		r, _ := req.Region()
		var v bool
		var err error
		if req.Type == TypeIsClean {
			v, err = l.IsClean(r)
		} else {
			v, err = l.InSync(r)
		}
		if err != nil {
			return logErr(req, err)
		}
		return AppendBool(scratch, v), 0, nil
	case TypeMarkRegion, TypeClearRegion, TypeFlush:
		s.regs, _ = req.AppendRegions(s.regs[:0])
		var err error
		switch {
		case req.Type == TypeClearRegion:
			err = l.Clear(s.regs)
		case len(s.regs) > 0: // MARK_REGION, or FLUSH with integrated_flush
			err = l.Mark(s.regs)
		}
		if err == nil && req.Type == TypeFlush {
			err = l.Flush()
		}
		return logErr(req, err)
	case TypeGetResyncWork:
		r, ok := l.ResyncWork()
		return AppendResyncWork(scratch, r, ok), 0, nil
	case TypeSetRegionSync:
		r, in, _ := req.RegionSync()
		return logErr(req, l.SetRegionSync(r, in))
	case TypeGetSyncCount:
		return AppendUint64(scratch, l.SyncCount()), 0, nil
	case TypeStatusInfo, TypeStatusTable:
		return AppendString(scratch, l.Status(req.Type == TypeStatusTable)), 0, nil
	case TypeIsRemoteRecovering:
		r, _ := req.Region()
		if rl, ok := l.(RemoteRecoveringLog); ok {
			rec, hint, err := rl.RemoteRecovering(r)
			if err != nil {
				return logErr(req, err)
			}
			return AppendRemoteRecovering(scratch, rec, hint), 0, nil
		}
		return AppendRemoteRecovering(scratch, false, 0), 0, nil
	}
	return nil, syscall.EINVAL, fmt.Errorf("dmlog: %v not handled", req.Type)
}

func (s *Server) construct(key logKey, req Request) ([]byte, syscall.Errno, error) {
	sectors, args, err := req.CtrArgs()
	if err != nil {
		return nil, syscall.EINVAL, fmt.Errorf("dmlog: constructor for %q: %w", req.UUID, err)
	}
	ctr := Ctr{UUID: req.UUID, LUID: req.LUID, Sectors: sectors, Args: args}
	ctr.Resent = len(req.Data) > 0 && req.Data[len(req.Data)-1] == 0
	if old, ok := s.lookup(key); ok {
		ctr.Again = true
		s.reconstructed.Add(1)
		s.setLog(key, nil)
		if err := old.Close(); err != nil {
			s.report(fmt.Errorf("dmlog: closing log %q before re-constructing it: %w", req.UUID, err))
		}
	}
	var l Log
	var dev string
	if s.New != nil {
		l, dev, err = s.New(ctr)
	} else {
		var ml *MemLog
		ml, err = NewCoreLog(sectors, args)
		if ml != nil {
			if ctr.Again || ctr.Resent {
				// The old state is lost or suspect (a request may have
				// gone missing): resynchronise everything, even for
				// nosync, rather than trust regions nobody tracked.
				ml.outOfSync()
			}
			l = ml
		}
	}
	if err == nil && l == nil {
		err = errors.New("Server.New returned no Log")
	}
	if err == nil && len(dev) >= DeviceNameLen {
		err = fmt.Errorf("device name of %d bytes, the kernel takes at most %d", len(dev), DeviceNameLen-1)
	}
	if err != nil {
		if l != nil {
			_ = l.Close()
		}
		return nil, errnoOf(err, syscall.EINVAL), fmt.Errorf("dmlog: constructing log %q (%q): %w", req.UUID, args, err)
	}
	s.setLog(key, l)
	if dev == "" {
		return nil, 0, nil
	}
	return AppendString(nil, dev), 0, nil
}

func logErr(req Request, err error) ([]byte, syscall.Errno, error) {
	if err == nil {
		return nil, 0, nil
	}
	return nil, errnoOf(err, syscall.EIO), fmt.Errorf("dmlog: %v on log %q: %w", req.Type, req.UUID, err)
}

// errnoOf returns the errno in err's chain, def if there is none; ErrInvalid
// maps to EINVAL.
func errnoOf(err error, def syscall.Errno) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) && e != 0 {
		return e
	}
	if errors.Is(err, ErrInvalid) {
		return syscall.EINVAL
	}
	return def
}

// ReadBufferSize is the receive buffer Serve asks for when the Conn's is
// smaller: a server socket must never overrun, because the kernel takes a
// multicast that reached nobody for a missing server (see the package
// documentation). Requests are at most 512 bytes, and the kernel has at most
// one outstanding per task waiting on a mirror, but they come in bursts:
// after a loss every waiting task re-sends the constructor at the same 2 s
// tick, and with the kernel's minimum buffer those bursts overflowed it
// again for 14 s in the matrix (TestIntegrationOverrun, 16 tasks, Linux 6.1).
const ReadBufferSize = 1 << 20

// Serve answers requests on c until ctx is done or c is closed. It first
// runs Check, and fails at once with its error; then it joins group 7 if c
// has not, and raises c's receive buffer to ReadBufferSize where it is
// smaller. Receive overruns are counted, reported to ErrorLog and survived:
// the kernel re-sends the constructor of each log it lost contact with, and
// the Server rebuilds that log.
//
// It returns an error matching ctx.Err() when ctx ends, connector.ErrClosed
// when c is closed. A nil ctx is an error that says so, before anything
// else.
func (s *Server) Serve(ctx context.Context, c *connector.Conn) error {
	if ctx == nil {
		return errors.New("dmlog: serve: ctx is nil: give it a context.Context (context.Background() to serve until c is closed)")
	}
	if err := s.check(c, "serve"); err != nil {
		return err
	}
	if err := joinDM(c); err != nil {
		return capcheck.Wrap("dmlog", "serve", "joining group 7 (needs CAP_NET_ADMIN before Linux 6.6)", err)
	}
	if n, err := c.ReadBuffer(); err == nil && n < ReadBufferSize {
		_ = c.SetReadBuffer(ReadBufferSize) // best effort; capped without CAP_NET_ADMIN
	}
	return s.serve0(ctx, c)
}

// Check tells whether Serve could answer the kernel's requests on c, so
// that a program can say it serves only when it can. It fails with an error
// matching ErrNoSysAdmin and os.ErrPermission when the process lacks
// CAP_SYS_ADMIN (unless SkipPrivilegeCheck), and with one matching
// connector.ErrNoAgent, naming the module to load (dm-log-userspace), when
// the kernel that c reaches lists its agents and dm-log-userspace's (id
// 7:1) is not among them: no request would ever come. It checks nothing
// else (joining group 7 is Serve's first step).
//
// Its errors read "dmlog: check: ..." (Serve's "dmlog: serve: ...").
func (s *Server) Check(c *connector.Conn) error { return s.check(c, "check") }

func (s *Server) check(c *connector.Conn, op string) error {
	if !s.SkipPrivilegeCheck {
		if err := capcheck.RequireSysAdmin("dmlog", op, ErrNoSysAdmin); err != nil {
			return err
		}
	}
	return capcheck.RequireAgent(c, "dmlog", op, connector.IDDM)
}

func joinDM(c *connector.Conn) error {
	g := connector.IDDM.Group()
	gs, err := c.Groups()
	if err == nil {
		for _, x := range gs {
			if x == g {
				return nil
			}
		}
	}
	return c.JoinGroup(g)
}

func (s *Server) overrun(err error) {
	s.overruns.Add(1)
	s.report(fmt.Errorf("dmlog: %w: requests were lost; the kernel treats that as a missing server and will re-send the constructors of the logs concerned", err))
}

// errnoName is the C name of the errors a Server answers unparsable
// requests with, for its log.
func errnoName(e syscall.Errno) string {
	switch e {
	case syscall.EAGAIN:
		return "EAGAIN"
	case syscall.EINVAL:
		return "EINVAL"
	}
	return fmt.Sprintf("errno %d (%v)", int(e), e)
}
