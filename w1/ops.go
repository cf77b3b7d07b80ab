package w1

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"

	"github.com/cnlink/connector"
)

// Masters returns the ids of the bus masters the kernel knows
// (W1_LIST_MASTERS), in the kernel's order; none is an empty list, not an
// error.
//
// The kernel answers LIST_MASTERS in the sender's own system call with one
// record per page of ids and no end marker, so the request carries a second
// message, an empty MASTER_CMD, whose EPROTO status the kernel sends right
// after the last page: that status ends the reply.
func (w *Conn) Masters(ctx context.Context) ([]MasterID, error) {
	payload, _ := AppendMsg(nil, Msg{Type: MsgListMasters})
	payload, _ = AppendMsg(payload, Msg{Type: MsgMasterCmd})
	ids := []MasterID{}
	var errs []error
	err := w.exchange(ctx, "list masters", payload, func(req, m connector.Message) bool {
		msgs, err := ParseMsgs(m.Data)
		if err != nil {
			errs = append(errs, wrap("list masters", "", err))
			return true
		}
		for n, msg := range msgs {
			switch {
			case m.Ack == req.Seq+1 && msg.Type == MsgListMasters:
				more, err := msg.Masters()
				if err != nil {
					errs = append(errs, wrap("list masters", "", err))
				}
				ids = append(ids, more...)
			case m.Ack == req.Ack && msg.Type == MsgMasterCmd:
				if syscall.Errno(msg.Status) != syscall.EPROTO {
					errs = append(errs, fmt.Errorf("w1: list masters: unexpected end-of-list status %d for the empty MASTER_CMD (want 71, EPROTO)", msg.Status))
				}
				w.ignore(len(msgs) - 1 - n)
				return true
			case m.Ack == req.Ack && msg.Status != 0:
				errs = append(errs, &Error{Op: "list masters", Index: -1, Errno: syscall.Errno(msg.Status)})
				w.ignore(len(msgs) - 1 - n)
				return true
			default:
				w.ignore(1) // neither a page of ids nor a status
			}
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	if len(errs) > 0 {
		return ids, errors.Join(errs...)
	}
	return ids, nil
}

// Slaves returns the slaves the kernel has registered on master m
// (W1_CMD_LIST_SLAVES): no bus traffic. The error matches syscall.ENODEV for
// an unknown master.
func (w *Conn) Slaves(ctx context.Context, m MasterID) ([]SlaveID, error) {
	return w.list(ctx, "list slaves", m, CmdListSlaves)
}

// Search runs a search on master m's bus (W1_CMD_SEARCH) and returns the
// ids found. The kernel registers every slave it finds (SLAVE_ADD on group
// 3) and applies its max_slave_count limit (64 by default).
func (w *Conn) Search(ctx context.Context, m MasterID) ([]SlaveID, error) {
	return w.list(ctx, "search", m, CmdSearch)
}

// AlarmSearch runs an alarm search on master m's bus
// (W1_CMD_ALARM_SEARCH): only devices in an alarm state answer.
func (w *Conn) AlarmSearch(ctx context.Context, m MasterID) ([]SlaveID, error) {
	return w.list(ctx, "alarm search", m, CmdAlarmSearch)
}

func (w *Conn) list(ctx context.Context, op string, m MasterID, cmd CmdType) ([]SlaveID, error) {
	ids := []SlaveID{}
	var derr error
	err := w.do(ctx, op, Msg{Type: MsgMasterCmd, ID: MasterMsgID(m), Cmds: []Cmd{{Cmd: cmd}}}, func(_ int, c Cmd) error {
		more, err := c.Slaves()
		ids = append(ids, more...)
		if err != nil && derr == nil {
			derr = err
		}
		return nil
	})
	if err == nil {
		err = wrap(op, "", derr)
	}
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// AddSlave registers slave id on master m without a search
// (W1_CMD_SLAVE_ADD), as writing to the master's w1_master_add sysfs file
// does: the family driver binds and SLAVE_ADD goes to group 3. The error
// matches syscall.EINVAL if the slave is already registered.
func (w *Conn) AddSlave(ctx context.Context, m MasterID, id SlaveID) error {
	k := id.Kernel()
	return w.do(ctx, "add slave", Msg{Type: MsgMasterCmd, ID: MasterMsgID(m), Cmds: []Cmd{{Cmd: CmdSlaveAdd, Data: k[:]}}}, nil)
}

// RemoveSlave unregisters slave id from master m (W1_CMD_SLAVE_REMOVE). The
// error matches syscall.EINVAL if the slave is not registered.
func (w *Conn) RemoveSlave(ctx context.Context, m MasterID, id SlaveID) error {
	k := id.Kernel()
	return w.do(ctx, "remove slave", Msg{Type: MsgMasterCmd, ID: MasterMsgID(m), Cmds: []Cmd{{Cmd: CmdSlaveRemove, Data: k[:]}}}, nil)
}

// Reset sends a reset pulse on master m's bus (W1_CMD_RESET) and reports
// whether a device answered with a presence pulse. No presence is not an
// error.
func (w *Conn) Reset(ctx context.Context, m MasterID) (present bool, err error) {
	tx := w.Master(m).Reset()
	tx.op = "reset " + m.String()
	err = tx.Do(ctx)
	if errors.Is(err, ErrNoPresence) {
		return false, nil
	}
	return err == nil, err
}

// A Tx is a bus transaction: commands sent as one w1_netlink_msg, for which
// the kernel holds the bus master's lock from the first to the last, so that
// neither its automatic search nor another client's request can come in
// between. Build it with Conn.Master or Conn.Slave and the chained methods,
// then run it with Do.
//
// A Tx runs once: a second Do fails with an error matching [ErrTxDone] and
// sends nothing, whatever the first one returned (a Do that failed may
// still have reached the bus), so that no write is repeated on the bus by
// accident. Build a new Tx to run the commands again. A Tx is not safe for
// concurrent use.
type Tx struct {
	w     *Conn
	op    string
	msg   Msg
	dests [][]byte // per command: where READ and TOUCH results go
	err   error
	ran   atomic.Bool // Do has sent the transaction, or tried to
}

// Master starts a transaction on master m's bus.
func (w *Conn) Master(m MasterID) *Tx {
	return &Tx{w: w, op: "transaction on " + m.String(), msg: Msg{Type: MsgMasterCmd, ID: MasterMsgID(m)}}
}

// Slave starts a transaction addressed to slave id: the kernel first resets
// the bus and selects the slave (SKIP ROM if it is the master's only
// registered slave, MATCH ROM with the id otherwise), then runs the
// commands. The slave must be registered (Search or AddSlave); a slave
// transaction takes only Read, Write and Touch (Reset gets EINVAL). If the
// selecting reset sees no presence the whole transaction fails with
// syscall.ENODEV.
func (w *Conn) Slave(id SlaveID) *Tx {
	return &Tx{w: w, op: "transaction on " + id.String(), msg: Msg{Type: MsgSlaveCmd, ID: id.Kernel()}}
}

func (t *Tx) add(c CmdType, data, dest []byte) *Tx {
	if len(data) > maxLen && t.err == nil {
		t.err = fmt.Errorf("w1: %s: %v of %d bytes exceeds the 65535 bytes a command can carry", t.op, c, len(data))
	}
	t.msg.Cmds = append(t.msg.Cmds, Cmd{Cmd: c, Data: data})
	t.dests = append(t.dests, dest)
	return t
}

// Reset adds a reset pulse. Its status is 0 with a presence pulse and 255
// (an *Error matching ErrNoPresence from Do) without one.
func (t *Tx) Reset() *Tx { return t.add(CmdReset, nil, nil) }

// Write adds the writing of p to the bus.
func (t *Tx) Write(p []byte) *Tx { return t.add(CmdWrite, p, nil) }

// Read adds the reading of len(p) bytes, which Do stores in p.
func (t *Tx) Read(p []byte) *Tx { return t.add(CmdRead, make([]byte, len(p)), p) }

// Touch adds a touch of p: each bit is written (a 1 is a read slot) and the
// bit sampled is stored back into p by Do.
func (t *Tx) Touch(p []byte) *Tx { return t.add(CmdTouch, p, p) }

// Do sends the transaction and waits for the status of every command. Read
// and Touch buffers are filled as their data arrives. A non-zero status is
// an *Error with the command's index (several are joined with
// errors.Join); the kernel runs the remaining commands after a failed one,
// except after a failed slave selection.
//
// Do runs the transaction once: called again on the same Tx it fails at
// once with an error matching [ErrTxDone] and sends nothing. A nil ctx is an
// error that says so; the Tx has then not run. A Tx that was
// refused before anything was sent (a command too large, no command) keeps
// failing with that error.
func (t *Tx) Do(ctx context.Context) error {
	if t.err != nil {
		return t.err
	}
	if ctx == nil {
		return nilCtx(t.op) // the Tx has not run: a Do with a context may follow
	}
	if len(t.msg.Cmds) == 0 {
		return fmt.Errorf("w1: %s: no commands (the kernel answers an empty command list with EPROTO)", t.op)
	}
	if t.ran.Swap(true) {
		return fmt.Errorf("w1: %s: %w", t.op, ErrTxDone)
	}
	return t.w.do(ctx, t.op, t.msg, func(i int, c Cmd) error {
		if i >= len(t.dests) || (t.msg.Cmds[i].Cmd != CmdRead && t.msg.Cmds[i].Cmd != CmdTouch) {
			return errIgnored // only READ and TOUCH return data
		}
		if c.Cmd != t.msg.Cmds[i].Cmd || len(c.Data) != len(t.dests[i]) {
			return fmt.Errorf("w1: %s: data record for command %d is %v with %d bytes, want %v with %d", t.op, i, c.Cmd, len(c.Data), t.msg.Cmds[i].Cmd, len(t.dests[i]))
		}
		copy(t.dests[i], c.Data)
		return nil
	})
}
