// Package w1test is a fake w1 (1-Wire) kernel agent on a cntest.Kernel, for
// unit tests of code that talks to the w1 connector without the kernel
// module, without hardware and without privileges. Its replies were
// compared byte for byte with the kernel's on Linux 6.1, 6.12, 6.18 and 7.3
// (w1.TestIntegrationReplyShape in the kernel matrix).
//
//	k := cntest.New(nil)
//	a := w1test.New(k)
//	m := a.AddMaster()                       // w1_bus_master1, MASTER_ADD on group 3
//	a.AttachDevice(m, w1.NewSlaveID(0x28, 0x79e36c0))
//	c, _ := k.Dial(nil)
//	w, _ := w1.NewConn(c, nil)                // w.Search(ctx, m) finds the DS18B20
//
// The agent answers as drivers/w1/w1_netlink.c does in Linux 6.1 to 7.3
// (the reply logic has not changed since 3.16): LIST_MASTERS synchronously;
// MASTER_CMD and SLAVE_CMD with the kernel's reply block, byte for byte: data
// records with ack = seq+1, one status record per command with the request's
// ack, bundling with W1_CN_BUNDLE, the early flushes of unbundled replies
// and so the stray empty 0:0 record ahead of a lone RESET, READ or TOUCH; the
// message-level errors (EINVAL for unknown cn_msg flags, ENODEV for an
// unknown master or slave, or a slave whose reset saw no presence, EPROTO for
// an empty command list or an unknown message type, which also ends the
// processing of the request) and per-command errors (EINVAL for unknown
// commands and for slave commands other than READ, WRITE and TOUCH; E2BIG for
// a command that runs past its message). Notifications (MASTER_ADD,
// MASTER_REMOVE, SLAVE_ADD, SLAVE_REMOVE) go to group 3 with a per-master
// sequence number that starts at 1.
//
// The bus is a model, not a device: each master has a presence flag for
// RESET, a list of devices that SEARCH finds (and then registers, as the
// kernel does), a queue of bytes that READ and TOUCH return (zeros once it is
// empty, as the matrix's i2c-stub bus master returns), and a log of written
// bytes. Commands run in the sender's Send, where the kernel runs them on the
// master's thread; the replies are the same.
//
// An Agent is safe for concurrent use. Its methods that take a master id
// (SetPresence, AttachDevice, RegisterSlave, SetAlarm, QueueRead, Written,
// Slaves) panic when the agent has no master with that id, never added or
// removed already: a mistake in the test, which a silently ignored call
// would hide.
package w1test

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/w1"
)

// Sizes from include/uapi/linux/connector.h and drivers/w1/w1_netlink.h.
const (
	cnHeaderLen   = connector.HeaderLen // struct cn_msg
	msgHeaderLen  = w1.MsgHeaderLen     // struct w1_netlink_msg
	cmdHeaderLen  = w1.CmdHeaderLen     // struct w1_netlink_cmd
	maxMsgSize    = connector.MaxMessageSize
	pageSize      = 4096 // PAGE_SIZE of the amd64 kernels the matrix runs
	maxSlaveCount = 64   // wire.ko's max_slave_count default
)

// An Agent is a fake w1 kernel agent registered on a cntest.Kernel for
// callback id 3:1.
type Agent struct {
	k *cntest.Kernel

	mu      sync.Mutex
	masters []*master
	nextID  w1.MasterID
	reqs    int
	dropped []error
}

type master struct {
	id       w1.MasterID
	seq      uint32 // dev->seq, for notifications
	presence bool
	devices  []w1.SlaveID // on the bus: what SEARCH finds
	alarm    []w1.SlaveID // what ALARM_SEARCH finds
	slaves   []w1.SlaveID // registered in the kernel: what LIST_SLAVES returns
	read     []byte
	written  []byte
}

// New registers a fake w1 agent on k for callback id 3:1 (w1.ID), as loading
// wire.ko does. It starts with no bus master. A nil k is a programming
// error: New panics with a message that says so.
func New(k *cntest.Kernel) *Agent {
	if k == nil {
		panic("w1test: New: the *cntest.Kernel is nil: give it the fake kernel from cntest.New")
	}
	a := &Agent{k: k, nextID: 1}
	k.Handle(w1.ID, a.handle)
	return a
}

// Unregister removes the agent from the kernel, as unloading wire.ko does:
// requests then get no reply at all.
func (a *Agent) Unregister() { a.k.Handle(w1.ID, nil) }

// Requests returns how many requests reached the agent.
func (a *Agent) Requests() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reqs
}

// Dropped returns the replies the agent could not queue, with the reason:
// the requester's receive queue was full (or the socket was gone). The real
// kernel waits for room instead, blocking the bus master's thread, so a
// test that sees drops here has a client that does not read fast enough.
func (a *Agent) Dropped() []error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.dropped)
}

// AddMaster registers a new bus master with the next free id (1, 2, ...),
// with presence on RESET and an empty bus, and multicasts MASTER_ADD.
func (a *Agent) AddMaster() w1.MasterID {
	a.mu.Lock()
	m := &master{id: a.nextID, seq: 1, presence: true}
	a.nextID++
	a.masters = append(a.masters, m)
	a.mu.Unlock()
	a.notify(m, w1.MsgMasterAdd, w1.MasterMsgID(m.id))
	return m.id
}

// RemoveMaster removes a bus master: its slaves go first, each with a
// SLAVE_REMOVE notification, then MASTER_REMOVE. It reports whether the
// master existed.
func (a *Agent) RemoveMaster(id w1.MasterID) bool {
	a.mu.Lock()
	i := slices.IndexFunc(a.masters, func(m *master) bool { return m.id == id })
	if i < 0 {
		a.mu.Unlock()
		return false
	}
	m := a.masters[i]
	a.masters = slices.Delete(a.masters, i, i+1)
	slaves := m.slaves
	m.slaves = nil
	a.mu.Unlock()
	for _, s := range slaves {
		a.notify(m, w1.MsgSlaveRemove, s.Kernel())
	}
	a.notify(m, w1.MsgMasterRemove, w1.MasterMsgID(m.id))
	return true
}

// SetPresence sets whether a RESET on the master sees a presence pulse
// (status 0) or not (status 255). Slave commands need presence.
func (a *Agent) SetPresence(id w1.MasterID, present bool) {
	a.with("SetPresence", id, func(m *master) { m.presence = present })
}

// AttachDevice puts a device on the master's bus, where SEARCH finds it (the
// first 64, wire.ko's default max_slave_count). The kernel registers it
// (SLAVE_ADD on group 3) when a search finds it, or through AddSlave.
func (a *Agent) AttachDevice(id w1.MasterID, s w1.SlaveID) {
	a.with("AttachDevice", id, func(m *master) { m.devices = append(m.devices, s) })
}

// RegisterSlave registers slaves on the master as the kernel does when a
// search finds them or AddSlave adds them, with a SLAVE_ADD notification
// each, without bus traffic. Ids already registered are skipped.
func (a *Agent) RegisterSlave(id w1.MasterID, s ...w1.SlaveID) {
	var added []w1.SlaveID
	var m *master
	a.with("RegisterSlave", id, func(mm *master) {
		m = mm
		for _, x := range s {
			if !slices.Contains(mm.slaves, x) {
				mm.slaves = append(mm.slaves, x)
				added = append(added, x)
			}
		}
	})
	for _, x := range added {
		a.notify(m, w1.MsgSlaveAdd, x.Kernel())
	}
}

// SetAlarm sets the devices that ALARM_SEARCH finds on the master.
func (a *Agent) SetAlarm(id w1.MasterID, s ...w1.SlaveID) {
	a.with("SetAlarm", id, func(m *master) { m.alarm = slices.Clone(s) })
}

// QueueRead appends bytes that the next READ and TOUCH commands on the
// master return, in order; once they are used up, reads return zeros.
func (a *Agent) QueueRead(id w1.MasterID, p []byte) {
	a.with("QueueRead", id, func(m *master) { m.read = append(m.read, p...) })
}

// Written returns the bytes written on the master's bus since the last call
// (WRITE and TOUCH data, and the SKIP ROM 0xcc or MATCH ROM 0x55 plus id that
// select a slave), and clears the log.
func (a *Agent) Written(id w1.MasterID) []byte {
	var w []byte
	a.with("Written", id, func(m *master) { w, m.written = m.written, nil })
	return w
}

// Slaves returns the master's slaves registered in the kernel.
func (a *Agent) Slaves(id w1.MasterID) []w1.SlaveID {
	var s []w1.SlaveID
	a.with("Slaves", id, func(m *master) { s = slices.Clone(m.slaves) })
	return s
}

// with runs f on the master with the id, under the lock. An id the agent
// has no master for is the test's mistake: it panics, naming the method
// and the masters there are, as New does for a nil kernel (see Agent).
func (a *Agent) with(op string, id w1.MasterID, f func(*master)) {
	a.mu.Lock()
	m := a.master(id)
	if m == nil {
		ids := make([]string, len(a.masters))
		for i, m := range a.masters {
			ids[i] = strconv.FormatUint(uint64(m.id), 10)
		}
		a.mu.Unlock()
		have := "none (AddMaster adds one)"
		if len(ids) > 0 {
			have = strings.Join(ids, ", ")
		}
		panic(fmt.Sprintf("w1test: %s: the agent has no bus master %d (its masters: %s)", op, id, have))
	}
	defer a.mu.Unlock()
	f(m)
}

func (a *Agent) master(id w1.MasterID) *master {
	for _, m := range a.masters {
		if m.id == id {
			return m
		}
	}
	return nil
}

// notify multicasts a notification as w1_netlink_send does: seq =
// dev->seq++, ack 0, one w1_netlink_msg with status 0 and len 0.
func (a *Agent) notify(m *master, t w1.MsgType, id [8]byte) {
	a.mu.Lock()
	seq := m.seq
	m.seq++
	a.mu.Unlock()
	b, _ := w1.AppendMsg(nil, w1.Msg{Type: t, ID: id})
	_, _ = a.k.Multicast(w1.Group, connector.Message{ID: w1.ID, Seq: seq, Data: b})
}

// A notice is a notification to send once the request is done.
type notice struct {
	m  *master
	t  w1.MsgType
	id w1.SlaveID
}

// handle is w1_cn_callback.
func (a *Agent) handle(req connector.Message, from connector.Sender) []cntest.Reply {
	a.mu.Lock()
	a.reqs++
	a.mu.Unlock()
	r := &run{a: a, port: from.Port, req: req}
	r.callback()
	for _, n := range r.notices {
		a.notify(n.m, n.t, n.id.Kernel())
	}
	return nil
}

// A run is the processing of one request.
type run struct {
	a       *Agent
	port    uint32
	req     connector.Message
	notices []notice
}

// field reads a little-endian u16 at off, zero past the end (the kernel
// reads whatever follows; the fake reads zeros).
func u16at(b []byte, off int) int {
	if off+2 > len(b) {
		return 0
	}
	return int(binary.NativeEndian.Uint16(b[off:]))
}

// header returns n bytes of b at off, zero-padded past the end.
func header(b []byte, off, n int) []byte {
	h := make([]byte, n)
	if off < len(b) {
		copy(h, b[off:])
	}
	return h
}

// send sends one netlink message holding the given cn_msg bytes to the
// requester, as cn_netlink_send_mult does: NLMSG_DONE, flags 0, nlmsg_seq =
// the first record's seq, pid 0.
func (r *run) send(cn []byte) {
	seq := binary.NativeEndian.Uint32(cn[8:12])
	dg := cntest.AppendNetlink(nil, cntest.NetlinkHeader{Type: cntest.TypeDone, Seq: seq}, cn)
	if err := r.a.k.InjectRaw(r.port, connector.Sender{}, dg); err != nil {
		r.a.mu.Lock()
		r.a.dropped = append(r.a.dropped, err)
		r.a.mu.Unlock()
	}
}

// reqHeader returns the request's cn_msg header as the kernel keeps it.
func (r *run) reqHeader() []byte {
	b, _ := cntest.AppendMessage(nil, connector.Message{ID: r.req.ID, Seq: r.req.Seq, Ack: r.req.Ack, Flags: r.req.Flags})
	return b
}

// sendError is w1_netlink_send_error: the request's cn_msg header with len
// 12, the message header with len 0 and the status, sent at once.
func (r *run) sendError(msg []byte, errno syscall.Errno) {
	cn := r.reqHeader()
	binary.NativeEndian.PutUint16(cn[16:], msgHeaderLen)
	m := slices.Clone(msg[:msgHeaderLen])
	m[1] = byte(errno) // (u8)-error of the negative kernel errno
	binary.NativeEndian.PutUint16(m[2:], 0)
	r.send(append(cn, m...))
}

func (r *run) callback() {
	data := r.req.Data
	if r.req.Flags&^w1.FlagBundle != 0 {
		r.sendError(header(data, 0, msgHeaderLen), syscall.EINVAL)
		return
	}
	// First pass: count nodes and commands (w1_list_count_cmds).
	nodes, cmds, slaveLen := 0, 0, 0
	for off := 0; off < len(data); {
		l := u16at(data, off+2)
		if len(data)-off < msgHeaderLen || l+msgHeaderLen > len(data)-off {
			break
		}
		t := w1.MsgType(data[off])
		if t == w1.MsgMasterCmd || t == w1.MsgSlaveCmd {
			nodes++
			lists := 0
			body := data[off+msgHeaderLen : off+msgHeaderLen+l]
			for c := 0; c < len(body); {
				cl := u16at(body, c+2)
				if len(body)-c < cmdHeaderLen || cl+cmdHeaderLen > len(body)-c {
					break
				}
				switch w1.CmdType(body[c]) {
				case w1.CmdSearch, w1.CmdAlarmSearch, w1.CmdListSlaves:
					lists++
				}
				cmds++
				c += cmdHeaderLen + cl
			}
			if lists > 0 {
				r.a.mu.Lock()
				if m := r.a.master(w1.Msg{ID: [8]byte(data[off+4 : off+12])}.Master()); m != nil {
					slaveLen += 8 * lists * (len(m.slaves) + maxSlaveCount)
				}
				r.a.mu.Unlock()
			}
		}
		off += msgHeaderLen + l
	}
	var blk *block
	if nodes > 0 {
		size := cnHeaderLen + len(data) + slaveLen
		bundle := r.req.Flags&w1.FlagBundle != 0
		if bundle {
			size += 2 * cmds * (cnHeaderLen + msgHeaderLen + cmdHeaderLen)
		}
		size = min(maxMsgSize, size)
		blk = &block{r: r, maxlen: size & 0xffff, bundle: bundle, req: r.reqHeader(), cn: -1, cmd: -1}
		blk.buf = make([]byte, cnHeaderLen)
	}
	type node struct {
		m     *master
		slave *w1.SlaveID
		msg   []byte // the w1_netlink_msg with its data
	}
	var queue []node
	var err syscall.Errno
	for off := 0; off < len(data) && err == 0; {
		if len(data)-off < msgHeaderLen {
			break // the kernel would read past the message: E2BIG, no reply
		}
		l := u16at(data, off+2)
		if l+msgHeaderLen > len(data)-off {
			break // E2BIG: nothing is sent
		}
		msg := data[off : off+msgHeaderLen+l]
		t := w1.MsgType(msg[0])
		switch {
		case t == w1.MsgListMasters:
			r.listMasters()
		case l == 0:
			err = syscall.EPROTO
		case t == w1.MsgMasterCmd || t == w1.MsgSlaveCmd:
			var n node
			r.a.mu.Lock()
			if t == w1.MsgMasterCmd {
				n.m = r.a.master(w1.Msg{ID: [8]byte(msg[4:12])}.Master())
			} else {
				id := w1.SlaveIDFromKernel([8]byte(msg[4:12]))
				for _, m := range r.a.masters {
					if slices.Contains(m.slaves, id) {
						n.m, n.slave = m, &id
						break
					}
				}
			}
			r.a.mu.Unlock()
			if n.m == nil {
				err = syscall.ENODEV
			} else {
				n.msg = msg
				queue = append(queue, n)
			}
		default:
			err = syscall.EPROTO
		}
		if err != 0 {
			r.sendError(msg, err)
		}
		if err == syscall.ENODEV {
			err = 0
		}
		off += msgHeaderLen + l
	}
	for _, n := range queue {
		blk.process(n.m, n.slave, n.msg)
	}
	if blk != nil {
		blk.unref()
	}
}

// listMasters is w1_process_command_root: one cn_msg per page of ids, seq =
// req.seq, ack = req.seq+1.
func (r *run) listMasters() {
	r.a.mu.Lock()
	ids := make([]w1.MasterID, len(r.a.masters))
	for i, m := range r.a.masters {
		ids[i] = m.id
	}
	r.a.mu.Unlock()
	flush := func(payload []byte) {
		b, _ := w1.AppendMsg(nil, w1.Msg{Type: w1.MsgListMasters, Data: payload})
		cn, _ := cntest.AppendMessage(nil, connector.Message{ID: w1.ID, Seq: r.req.Seq, Ack: r.req.Seq + 1, Data: b})
		r.send(cn)
	}
	var payload []byte
	for _, id := range ids {
		if msgHeaderLen+len(payload)+4 > pageSize-cnHeaderLen {
			flush(payload)
			payload = payload[:0]
		}
		payload = binary.NativeEndian.AppendUint32(payload, uint32(id))
	}
	flush(payload)
}

// A block is struct w1_cb_block's reply side: buf is first_cn and the
// records after it; cn, msg and cmd are the offsets of block->cn, block->msg
// and block->cmd in buf, -1 for NULL.
type block struct {
	r      *run
	req    []byte // request cn_msg header
	bundle bool
	maxlen int
	buf    []byte
	cn     int
	msg    int
	cmd    int
	curMsg []byte // header of the message being processed
}

func (b *block) ensure(n int) {
	if len(b.buf) < n {
		b.buf = append(b.buf, make([]byte, n-len(b.buf))...)
	}
}

func (b *block) get16(off int) int       { return int(binary.NativeEndian.Uint16(b.buf[off:])) }
func (b *block) put16(off, v int)        { binary.NativeEndian.PutUint16(b.buf[off:], uint16(v)) }
func (b *block) add16(off, v int)        { b.put16(off, b.get16(off)+v) }
func (b *block) cnLen() int              { return b.get16(b.cn + 16) }
func (b *block) write(off int, p []byte) { b.ensure(off + len(p)); copy(b.buf[off:], p) }

// replyLen is w1_reply_len.
func (b *block) replyLen() int {
	if b.cn < 0 {
		return 0
	}
	return b.cn + b.cnLen()
}

// makeSpace is w1_reply_make_space.
func (b *block) makeSpace(space int) {
	l := b.replyLen()
	if l+space >= b.maxlen {
		b.r.send(slices.Clone(b.buf[:cnHeaderLen+l]))
		b.put16(16, 0)
		b.cn, b.msg, b.cmd = -1, -1, -1
	}
}

// checkSend is w1_netlink_check_send.
func (b *block) checkSend() {
	if !b.bundle && b.cn >= 0 {
		b.makeSpace(b.maxlen)
	}
}

// setupMsg is w1_netlink_setup_msg.
func (b *block) setupMsg(ack uint32) {
	if b.cn >= 0 && binary.NativeEndian.Uint32(b.buf[b.cn+12:]) == ack {
		b.msg = b.cn + cnHeaderLen + b.cnLen()
		return
	}
	if b.cn >= 0 {
		b.cn += cnHeaderLen + b.cnLen()
	} else {
		b.cn = 0
	}
	b.write(b.cn, b.req)
	b.put16(b.cn+16, 0)
	binary.NativeEndian.PutUint32(b.buf[b.cn+12:], ack)
	b.msg = b.cn + cnHeaderLen
}

// queueCmd is w1_netlink_queue_cmd: a data record, ack = seq+1, holding
// the current message header and cmd with its data.
func (b *block) queueCmd(cmd []byte) {
	b.makeSpace(cnHeaderLen + msgHeaderLen + len(cmd))
	b.setupMsg(binary.NativeEndian.Uint32(b.req[8:]) + 1)
	b.write(b.msg, b.curMsg)
	b.add16(b.cn+16, msgHeaderLen)
	b.put16(b.msg+2, 0)
	b.cmd = b.msg + msgHeaderLen
	b.write(b.cmd, cmd)
	b.add16(b.cn+16, len(cmd))
	b.add16(b.msg+2, len(cmd))
}

// queueStatus is w1_netlink_queue_status: a status record, ack =
// req.ack, with the command's header (len 0) if there is one.
func (b *block) queueStatus(msg, cmd []byte, errno syscall.Errno) {
	b.makeSpace(cnHeaderLen + msgHeaderLen + cmdHeaderLen)
	b.setupMsg(binary.NativeEndian.Uint32(b.req[12:]))
	b.write(b.msg, msg[:msgHeaderLen])
	b.add16(b.cn+16, msgHeaderLen)
	b.put16(b.msg+2, 0)
	b.buf[b.msg+1] = byte(errno)
	if cmd != nil {
		c := b.msg + msgHeaderLen
		b.write(c, cmd[:cmdHeaderLen])
		b.add16(b.cn+16, cmdHeaderLen)
		b.add16(b.msg+2, cmdHeaderLen)
		b.put16(c+2, 0)
	}
	b.checkSend()
}

// sendSlave is w1_send_slave: append an 8-byte id to the open data record,
// starting a new one (with the cached command header) after a flush.
func (b *block) sendSlave(id w1.SlaveID) {
	cache := slices.Clone(b.buf[b.cmd : b.cmd+cmdHeaderLen])
	b.makeSpace(8)
	if b.cmd < 0 {
		binary.NativeEndian.PutUint16(cache[2:], 0)
		b.queueCmd(cache)
	}
	at := b.cmd + cmdHeaderLen + b.get16(b.cmd+2)
	k := id.Kernel()
	b.write(at, k[:])
	b.add16(b.cn+16, 8)
	b.add16(b.msg+2, 8)
	b.add16(b.cmd+2, 8)
}

func (b *block) unref() {
	if l := b.replyLen(); l > 0 {
		b.r.send(slices.Clone(b.buf[:cnHeaderLen+l]))
	}
}

// process is w1_process_cb for one message.
func (b *block) process(m *master, slave *w1.SlaveID, msg []byte) {
	a := b.r.a
	var err syscall.Errno
	if slave != nil {
		a.mu.Lock()
		if !m.presence {
			err = syscall.ENODEV
		} else if len(m.slaves) == 1 {
			m.written = append(m.written, 0xcc) // SKIP ROM
		} else {
			m.written = append(append(m.written, 0x55), slave[:]...) // MATCH ROM
		}
		a.mu.Unlock()
	}
	b.curMsg = msg[:msgHeaderLen]
	body := msg[msgHeaderLen:]
	off := 0
	cmd := header(body, 0, cmdHeaderLen)
	for off < len(body) && err == 0 {
		cmd = header(body, off, cmdHeaderLen)
		cl := u16at(cmd, 2)
		if cl+cmdHeaderLen > len(body)-off {
			err = syscall.E2BIG
			break
		}
		full := slices.Clone(body[off : off+cmdHeaderLen+cl])
		var e syscall.Errno
		if slave != nil {
			e = b.io(m, full)
		} else {
			e, full = b.master(m, full)
		}
		b.checkSend()
		b.queueStatus(msg, full, e)
		off += cmdHeaderLen + u16at(full, 2)
	}
	if err != 0 {
		b.queueStatus(msg, cmd, err)
	}
}

// io is w1_process_command_io: READ, WRITE, TOUCH; EINVAL otherwise.
func (b *block) io(m *master, cmd []byte) syscall.Errno {
	a := b.r.a
	data := cmd[cmdHeaderLen:]
	switch w1.CmdType(cmd[0]) {
	case w1.CmdRead, w1.CmdTouch:
		a.mu.Lock()
		if w1.CmdType(cmd[0]) == w1.CmdTouch {
			m.written = append(m.written, data...)
		}
		for i := range data {
			data[i] = 0
			if len(m.read) > 0 {
				data[i], m.read = m.read[0], m.read[1:]
			}
		}
		a.mu.Unlock()
		b.queueCmd(cmd)
	case w1.CmdWrite:
		a.mu.Lock()
		m.written = append(m.written, data...)
		a.mu.Unlock()
	default:
		return syscall.EINVAL
	}
	return 0
}

// master is w1_process_command_master. It returns the command as the kernel
// leaves it (a list command's len is set to 0).
func (b *block) master(m *master, cmd []byte) (syscall.Errno, []byte) {
	a := b.r.a
	switch c := w1.CmdType(cmd[0]); c {
	case w1.CmdSearch, w1.CmdAlarmSearch, w1.CmdListSlaves:
		cmd = cmd[:cmdHeaderLen]
		binary.NativeEndian.PutUint16(cmd[2:], 0)
		b.queueCmd(cmd)
		a.mu.Lock()
		var found []w1.SlaveID
		switch c {
		case w1.CmdListSlaves:
			found = slices.Clone(m.slaves)
		case w1.CmdSearch:
			// A search stops after max_slave_count devices.
			found = slices.Clone(m.devices[:min(len(m.devices), maxSlaveCount)])
		default:
			found = slices.Clone(m.alarm[:min(len(m.alarm), maxSlaveCount)])
		}
		if c != w1.CmdListSlaves {
			for _, s := range found {
				// w1_slave_found registers only non-zero ids with a
				// valid CRC.
				if s != (w1.SlaveID{}) && s.Valid() && !slices.Contains(m.slaves, s) {
					m.slaves = append(m.slaves, s)
					b.r.notices = append(b.r.notices, notice{m, w1.MsgSlaveAdd, s})
				}
			}
		}
		a.mu.Unlock()
		for _, s := range found {
			b.sendSlave(s)
		}
		return 0, cmd
	case w1.CmdRead, w1.CmdWrite, w1.CmdTouch:
		return b.io(m, cmd), cmd
	case w1.CmdReset:
		a.mu.Lock()
		defer a.mu.Unlock()
		if !m.presence {
			return w1.StatusNoPresence, cmd // w1_reset_bus returns 1: status (u8)-1
		}
		return 0, cmd
	case w1.CmdSlaveAdd, w1.CmdSlaveRemove:
		if len(cmd) != cmdHeaderLen+8 {
			return syscall.EINVAL, cmd
		}
		id := w1.SlaveIDFromKernel([8]byte(cmd[cmdHeaderLen:]))
		a.mu.Lock()
		defer a.mu.Unlock()
		i := slices.Index(m.slaves, id)
		if c == w1.CmdSlaveAdd {
			if i >= 0 {
				return syscall.EINVAL, cmd
			}
			m.slaves = append(m.slaves, id)
			b.r.notices = append(b.r.notices, notice{m, w1.MsgSlaveAdd, id})
			return 0, cmd
		}
		if i < 0 {
			return syscall.EINVAL, cmd
		}
		m.slaves = slices.Delete(m.slaves, i, i+1)
		b.r.notices = append(b.r.notices, notice{m, w1.MsgSlaveRemove, id})
		return 0, cmd
	default:
		return syscall.EINVAL, cmd
	}
}
