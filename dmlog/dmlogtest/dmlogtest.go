// Package dmlogtest plays the kernel side of dm-log-userspace on a
// cntest.Kernel, so that a dmlog.Server and the dmlog.Log behind it can be
// tested without device-mapper, modules or privileges.
//
//	k := cntest.New(nil)
//	dm := dmlogtest.New(k)
//	c, _ := k.Dial(nil)
//	go (&dmlog.Server{SkipPrivilegeCheck: true, New: myLog}).Serve(ctx, c)
//	m := dm.Mirror("my-uuid", 0xffff888001000000)
//	err := m.Ctr(8192, "core", "1024")
//	err = m.Mark(2)
//
// Kernel sends each request as drivers/md/dm-log-userspace-transfer.c does:
// a multicast on group 7 from port 0 with a new sequence number, the
// 160-byte header and the data; it matches the reply on that sequence number
// (in the payload, or in cn_msg.seq for a reply without payload), resends at
// once under a new number on an EAGAIN ack, and reports a multicast that
// reached no socket as ErrNoServer (the kernel's ESRCH). It does not model
// the kernel's 15 s resend or its reconnect loop: a request without a reply
// fails when its context ends.
package dmlogtest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/dmlog"
)

// ErrNoServer reports a request that no socket on group 7 received: the
// kernel gets ESRCH and, for a constructor, fails the table load.
var ErrNoServer = errors.New("dmlogtest: no server listens on group 7 (the kernel's ESRCH)")

// A Kernel is the fake dm-log-userspace. It is safe for concurrent use:
// requests from several goroutines wait for their own replies, as the
// kernel's waiting tasks do.
type Kernel struct {
	k *cntest.Kernel

	mu      sync.Mutex
	seq     uint32
	waiting map[uint32]chan connector.Message
	// Requests counts the requests sent, resends included.
	requests uint64
}

// New registers the fake on k for connector.IDDM: what a server sends to
// the kernel (port 0) for that id is taken as a reply.
func New(k *cntest.Kernel) *Kernel {
	d := &Kernel{k: k, waiting: make(map[uint32]chan connector.Message)}
	k.Handle(connector.IDDM, func(m connector.Message, from connector.Sender) []cntest.Reply {
		d.reply(m)
		return nil
	})
	return d
}

// reply hands a server's message to the request it answers, as fill_pkg
// does; others are dropped, as the kernel drops them.
func (d *Kernel) reply(m connector.Message) {
	seq := m.Seq
	if len(m.Data) > 0 {
		r, err := dmlog.ParseReply(m.Data)
		if err != nil {
			return // "Incomplete message received": dropped
		}
		seq = r.Seq
	}
	d.mu.Lock()
	ch := d.waiting[seq]
	delete(d.waiting, seq)
	d.mu.Unlock()
	if ch != nil {
		ch <- m
	}
}

// Requests returns the number of requests sent, resends included.
func (d *Kernel) Requests() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.requests
}

// A ReplyError is a reply that carried an errno.
type ReplyError struct {
	Type  dmlog.RequestType
	Errno syscall.Errno
}

func (e *ReplyError) Error() string {
	return fmt.Sprintf("dmlogtest: %v answered with %v", e.Type, e.Errno)
}

// Unwrap returns the errno, so errors.Is(err, syscall.ESRCH) works.
func (e *ReplyError) Unwrap() error { return e.Errno }

// Request sends one request for the log h names (h.UUID and h.LUID; the
// rest is filled in) and returns the reply's data. A reply with an errno is
// a *ReplyError; an EAGAIN ack makes it resend, as the kernel does.
func (d *Kernel) Request(ctx context.Context, h dmlog.Header, typ dmlog.RequestType, data []byte) ([]byte, error) {
	if ctx == nil {
		return nil, errors.New("dmlogtest: request: ctx is nil: give it a context.Context")
	}
	for {
		d.mu.Lock()
		d.seq++
		seq := d.seq
		d.requests++
		ch := make(chan connector.Message, 1)
		d.waiting[seq] = ch
		d.mu.Unlock()
		h.Version, h.Seq, h.Type, h.Error, h.TypeFlags = dmlog.Version, seq, typ, 0, 0
		b, err := dmlog.AppendRequest(nil, dmlog.Request{Header: h, Data: data})
		if err == nil && len(data) > dmlog.MaxRequestData {
			err = fmt.Errorf("dmlogtest: %d data bytes, the kernel sends at most %d (EINVAL)", len(data), dmlog.MaxRequestData)
		}
		var n int
		if err == nil {
			n, err = d.k.Multicast(connector.IDDM.Group(), connector.Message{ID: connector.IDDM, Seq: seq, Data: b})
		}
		if err == nil && n == 0 {
			err = ErrNoServer
		}
		if err != nil {
			d.forget(seq)
			return nil, err
		}
		var m connector.Message
		select {
		case m = <-ch:
		case <-ctx.Done():
			d.forget(seq)
			return nil, fmt.Errorf("dmlogtest: %v seq %d: %w", typ, seq, ctx.Err())
		}
		if len(m.Data) == 0 { // an ack: cn_msg.ack is a positive errno
			if syscall.Errno(m.Ack) == syscall.EAGAIN {
				continue
			}
			if m.Ack != 0 {
				return nil, &ReplyError{typ, syscall.Errno(m.Ack)}
			}
			return nil, nil
		}
		r, _ := dmlog.ParseReply(m.Data) // parsed once already
		if lim := typ.ReplyDataLimit(); lim >= 0 && len(r.Data) > lim {
			return nil, &ReplyError{typ, syscall.ENOSPC} // as the kernel refuses it
		}
		if r.Error < 0 {
			return nil, &ReplyError{typ, r.Errno()}
		}
		return append([]byte(nil), r.Data...), nil
	}
}

func (d *Kernel) forget(seq uint32) {
	d.mu.Lock()
	delete(d.waiting, seq)
	d.mu.Unlock()
}

// Mirror returns a handle for the requests of one log, as the userspace
// log type sends them for a mirror.
func (d *Kernel) Mirror(uuid string, luid uint64) *Mirror {
	return &Mirror{d: d, h: dmlog.Header{UUID: uuid, LUID: luid}, Ctx: context.Background()}
}

// A Mirror sends the requests of one log. Its methods are named after the
// dirty log calls (include/linux/dm-dirty-log.h) the kernel forwards.
type Mirror struct {
	d *Kernel
	h dmlog.Header
	// Ctx bounds every request (default: none).
	Ctx context.Context
}

func (m *Mirror) do(typ dmlog.RequestType, data []byte) ([]byte, error) {
	return m.d.Request(m.Ctx, m.h, typ, data)
}

func (m *Mirror) u64(typ dmlog.RequestType, data []byte) (uint64, error) {
	b, err := m.do(typ, data)
	if err != nil {
		return 0, err
	}
	return dmlog.ParseUint64(b)
}

func regions(rs []uint64) []byte {
	var b []byte
	for _, r := range rs {
		b = dmlog.AppendUint64(b, r)
	}
	return b
}

// Ctr constructs the log for a mirror of sectors 512-byte sectors with the
// table's log arguments (those after the uuid), and returns the device name
// the server asked the kernel to open, if any.
func (m *Mirror) Ctr(sectors uint64, args ...string) (string, error) {
	s := strconv.FormatUint(sectors, 10)
	if len(args) > 0 {
		s += " " + strings.Join(args, " ")
	}
	b, err := m.do(dmlog.TypeCtr, []byte(s))
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\x00"), nil
}

// Dtr destroys the log.
func (m *Mirror) Dtr() error { _, err := m.do(dmlog.TypeDtr, nil); return err }

// Suspend sends PRESUSPEND and POSTSUSPEND; Resume sends RESUME.
func (m *Mirror) Suspend() error {
	if _, err := m.do(dmlog.TypePresuspend, nil); err != nil {
		return err
	}
	_, err := m.do(dmlog.TypePostsuspend, nil)
	return err
}

// Resume sends RESUME.
func (m *Mirror) Resume() error { _, err := m.do(dmlog.TypeResume, nil); return err }

// RegionSize asks for the region size in sectors.
func (m *Mirror) RegionSize() (uint64, error) { return m.u64(dmlog.TypeGetRegionSize, nil) }

// SyncCount asks how many regions are in sync.
func (m *Mirror) SyncCount() (uint64, error) { return m.u64(dmlog.TypeGetSyncCount, nil) }

// IsClean asks whether region r is clean.
func (m *Mirror) IsClean(r uint64) (bool, error) {
	v, err := m.u64(dmlog.TypeIsClean, dmlog.AppendUint64(nil, r))
	return v != 0, err
}

// InSync asks whether region r is in sync.
func (m *Mirror) InSync(r uint64) (bool, error) {
	v, err := m.u64(dmlog.TypeInSync, dmlog.AppendUint64(nil, r))
	return v != 0, err
}

// Mark sends MARK_REGION, Clear CLEAR_REGION (at most 32 regions each, as
// the kernel batches them).
func (m *Mirror) Mark(rs ...uint64) error {
	_, err := m.do(dmlog.TypeMarkRegion, regions(rs))
	return err
}

// Clear sends CLEAR_REGION.
func (m *Mirror) Clear(rs ...uint64) error {
	_, err := m.do(dmlog.TypeClearRegion, regions(rs))
	return err
}

// Flush sends FLUSH; with marks, as integrated_flush does, it carries the
// regions to mark.
func (m *Mirror) Flush(marks ...uint64) error {
	_, err := m.do(dmlog.TypeFlush, regions(marks))
	return err
}

// ResyncWork asks for a region to recover.
func (m *Mirror) ResyncWork() (region uint64, ok bool, err error) {
	b, err := m.do(dmlog.TypeGetResyncWork, nil)
	if err != nil {
		return 0, false, err
	}
	ok, region, err = dmlog.ParsePair(b)
	return region, ok, err
}

// SetRegionSync reports a region's recovery.
func (m *Mirror) SetRegionSync(r uint64, inSync bool) error {
	_, err := m.do(dmlog.TypeSetRegionSync, dmlog.AppendRegionSync(nil, r, inSync))
	return err
}

// RemoteRecovering asks whether another node recovers region r.
func (m *Mirror) RemoteRecovering(r uint64) (recovering bool, inSyncHint uint64, err error) {
	b, err := m.do(dmlog.TypeIsRemoteRecovering, dmlog.AppendUint64(nil, r))
	if err != nil {
		return false, 0, err
	}
	return dmlog.ParsePair(b)
}

// Status asks for the log's status (STATUS_INFO).
func (m *Mirror) Status() (string, error) {
	b, err := m.do(dmlog.TypeStatusInfo, nil)
	return strings.TrimRight(string(b), "\x00"), err
}
