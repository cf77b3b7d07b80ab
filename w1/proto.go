package w1

import (
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/cnlink/connector"
)

// Wire format of the w1 netlink protocol. The kernel defines it in
// drivers/w1/w1_netlink.h, which is not a uapi header; the layouts and values
// below are identical in Linux 6.1.192, 6.12.118 and 7.3.4 (and unchanged
// since the 2014 rework in Linux 3.16, which added W1_CN_BUNDLE,
// W1_CMD_LIST_SLAVES, W1_CMD_SLAVE_ADD and W1_CMD_SLAVE_REMOVE). Every field
// is in host byte order.

// ID is the connector callback id of the w1 agent (CN_W1_IDX 3, CN_W1_VAL 1
// in include/uapi/linux/connector.h), registered when wire.ko loads.
var ID = connector.IDW1

// Group is the multicast group w1 notifications are sent on (the callback
// index, 3).
const Group connector.Group = 3

// FlagBundle is W1_CN_BUNDLE (enum w1_cn_msg_flags, drivers/w1/w1_netlink.h):
// set in cn_msg.flags, it asks the kernel to pack the replies to one request
// into as few datagrams as it can. Any other flag bit makes the kernel reject
// the request with EINVAL.
const FlagBundle uint16 = 1

const (
	// MsgHeaderLen is sizeof(struct w1_netlink_msg) without data: type,
	// status (u8 each), len (u16) and the 8-byte id union.
	MsgHeaderLen = 12
	// CmdHeaderLen is sizeof(struct w1_netlink_cmd) without data: cmd, res
	// (u8 each) and len (u16).
	CmdHeaderLen = 4
	// maxLen is the largest value of the u16 len fields.
	maxLen = 0xffff
)

// A MsgType is the type of a w1_netlink_msg (enum w1_netlink_message_types,
// drivers/w1/w1_netlink.h).
type MsgType uint8

const (
	MsgSlaveAdd     MsgType = 0 // W1_SLAVE_ADD: notification, a slave was attached
	MsgSlaveRemove  MsgType = 1 // W1_SLAVE_REMOVE: notification, a slave went away
	MsgMasterAdd    MsgType = 2 // W1_MASTER_ADD: notification, a bus master registered
	MsgMasterRemove MsgType = 3 // W1_MASTER_REMOVE: notification, a bus master went away
	MsgMasterCmd    MsgType = 4 // W1_MASTER_CMD: commands for the master in ID
	MsgSlaveCmd     MsgType = 5 // W1_SLAVE_CMD: reset, select the slave in ID, then commands
	MsgListMasters  MsgType = 6 // W1_LIST_MASTERS: the u32 ids of every master
)

var msgTypeNames = [...]string{"SLAVE_ADD", "SLAVE_REMOVE", "MASTER_ADD", "MASTER_REMOVE", "MASTER_CMD", "SLAVE_CMD", "LIST_MASTERS"}

func (t MsgType) String() string {
	if int(t) < len(msgTypeNames) {
		return msgTypeNames[t]
	}
	return "MSG_" + strconv.Itoa(int(t))
}

// A CmdType is the command of a w1_netlink_cmd (enum w1_commands,
// drivers/w1/w1_netlink.h).
type CmdType uint8

const (
	CmdRead        CmdType = 0 // W1_CMD_READ: read len bytes (the request carries len placeholder bytes)
	CmdWrite       CmdType = 1 // W1_CMD_WRITE: write the data bytes
	CmdSearch      CmdType = 2 // W1_CMD_SEARCH: search the bus, reply with 8-byte slave ids
	CmdAlarmSearch CmdType = 3 // W1_CMD_ALARM_SEARCH: search for slaves in alarm state
	CmdTouch       CmdType = 4 // W1_CMD_TOUCH: write the data bits and reply with the bits sampled
	CmdReset       CmdType = 5 // W1_CMD_RESET: reset pulse; status 0 on presence, 255 without
	CmdSlaveAdd    CmdType = 6 // W1_CMD_SLAVE_ADD: attach the slave whose 8-byte id is the data
	CmdSlaveRemove CmdType = 7 // W1_CMD_SLAVE_REMOVE: detach the slave whose 8-byte id is the data
	CmdListSlaves  CmdType = 8 // W1_CMD_LIST_SLAVES: the kernel's slave list, no bus traffic
)

var cmdTypeNames = [...]string{"READ", "WRITE", "SEARCH", "ALARM_SEARCH", "TOUCH", "RESET", "SLAVE_ADD", "SLAVE_REMOVE", "LIST_SLAVES"}

func (c CmdType) String() string {
	if int(c) < len(cmdTypeNames) {
		return cmdTypeNames[c]
	}
	return "CMD_" + strconv.Itoa(int(c))
}

// StatusNoPresence is the status of a RESET command that saw no presence
// pulse: w1_reset_bus returns 1 and the kernel stores (u8)-1.
const StatusNoPresence = 255

// A Cmd is one struct w1_netlink_cmd: a command and its data.
type Cmd struct {
	Cmd CmdType
	// Res is the reserved byte; the kernel copies it into replies.
	Res uint8
	// Data follows the header; its length is the command's len field. A
	// READ request carries as many placeholder bytes as it reads; a status
	// record carries none.
	Data []byte
}

// A Msg is one struct w1_netlink_msg: a message type, a status, an 8-byte id
// and a payload.
type Msg struct {
	Type MsgType
	// Status is 0 or, in replies, a positive errno stored as a u8 (255 for
	// a RESET without a presence pulse).
	Status uint8
	// ID is the id union: a slave id (struct w1_reg_num) for slave messages,
	// a master id in the first 4 bytes for master messages. See
	// Msg.Master, Msg.Slave, MasterMsgID and SlaveID.
	ID [8]byte
	// Data is the raw payload (len bytes after the header). For MASTER_CMD
	// and SLAVE_CMD messages it holds the commands, which ParseMsgs also
	// decodes into Cmds; for LIST_MASTERS the u32 master ids.
	Data []byte
	// Cmds are the decoded commands of a MASTER_CMD or SLAVE_CMD message.
	// When encoding, a non-empty Cmds replaces Data.
	Cmds []Cmd
}

// Master returns the master id held in m.ID (id.mst.id).
func (m Msg) Master() MasterID { return MasterID(binary.NativeEndian.Uint32(m.ID[:4])) }

// Slave returns the slave id held in m.ID.
func (m Msg) Slave() SlaveID { return SlaveIDFromKernel(m.ID) }

// SlaveMsgID returns the id union of a slave message: the slave's
// struct w1_reg_num as the kernel stores it (see SlaveID.Kernel).
func SlaveMsgID(id SlaveID) [8]byte { return id.Kernel() }

// MasterMsgID returns the id union of a master message: the u32 id followed
// by the 4 reserved bytes, zero.
func MasterMsgID(id MasterID) [8]byte {
	var b [8]byte
	binary.NativeEndian.PutUint32(b[:4], uint32(id))
	return b
}

// Masters decodes the payload of a LIST_MASTERS reply: u32 master ids. A
// trailing partial id is an error.
func (m Msg) Masters() ([]MasterID, error) {
	if len(m.Data)%4 != 0 {
		return nil, malformed("LIST_MASTERS payload of %d bytes is not a whole number of 4-byte master ids", len(m.Data))
	}
	ids := make([]MasterID, 0, len(m.Data)/4)
	for b := m.Data; len(b) >= 4; b = b[4:] {
		ids = append(ids, MasterID(binary.NativeEndian.Uint32(b)))
	}
	return ids, nil
}

// Slaves decodes the data of a SEARCH, ALARM_SEARCH or LIST_SLAVES reply
// command: 8-byte slave ids. A trailing partial id is an error.
func (c Cmd) Slaves() ([]SlaveID, error) {
	if len(c.Data)%8 != 0 {
		return nil, malformed("%v reply of %d bytes is not a whole number of 8-byte slave ids", c.Cmd, len(c.Data))
	}
	ids := make([]SlaveID, 0, len(c.Data)/8)
	for b := c.Data; len(b) >= 8; b = b[8:] {
		ids = append(ids, SlaveIDFromKernel([8]byte(b)))
	}
	return ids, nil
}

// encodedLen returns the payload length of m as AppendMsg encodes it.
func (m Msg) payloadLen() int {
	if len(m.Cmds) == 0 {
		return len(m.Data)
	}
	n := 0
	for _, c := range m.Cmds {
		n += CmdHeaderLen + len(c.Data)
	}
	return n
}

// AppendMsg appends the encoding of m (a w1_netlink_msg header, then the
// commands of m.Cmds or, if there are none, m.Data) to b. It fails if a
// command's data or the payload does not fit the u16 len fields; b is then
// returned unchanged.
func AppendMsg(b []byte, m Msg) ([]byte, error) {
	for i, c := range m.Cmds {
		if len(c.Data) > maxLen {
			return b, fmt.Errorf("w1: append message: command %d (%v) has %d data bytes; its len field holds at most %d", i, c.Cmd, len(c.Data), maxLen)
		}
	}
	n := m.payloadLen()
	if n > maxLen {
		return b, fmt.Errorf("w1: append message: %v message payload of %d bytes exceeds its len field's limit of %d", m.Type, n, maxLen)
	}
	b = append(b, byte(m.Type), m.Status)
	b = binary.NativeEndian.AppendUint16(b, uint16(n))
	b = append(b, m.ID[:]...)
	if len(m.Cmds) == 0 {
		return append(b, m.Data...), nil
	}
	for _, c := range m.Cmds {
		b = append(b, byte(c.Cmd), c.Res)
		b = binary.NativeEndian.AppendUint16(b, uint16(len(c.Data)))
		b = append(b, c.Data...)
	}
	return b, nil
}

// ParseMsgs decodes the w1_netlink_msg records packed in the payload of one
// cn_msg (several follow one another in requests and in bundled replies).
// The Data of each Msg and Cmd aliases b. For MASTER_CMD and SLAVE_CMD
// messages the commands are decoded into Cmds.
//
// It never panics: a header that does not fit, or a len field that runs past
// the bytes it is given, is an error matching connector.ErrMalformed,
// returned with the messages decoded before it.
func ParseMsgs(b []byte) ([]Msg, error) {
	var msgs []Msg
	for off := 0; off < len(b); {
		rest := b[off:]
		if len(rest) < MsgHeaderLen {
			return msgs, malformed("%d bytes at offset %d are too short for the %d-byte w1_netlink_msg header", len(rest), off, MsgHeaderLen)
		}
		var m Msg
		m.Type = MsgType(rest[0])
		m.Status = rest[1]
		l := int(binary.NativeEndian.Uint16(rest[2:4]))
		copy(m.ID[:], rest[4:12])
		if MsgHeaderLen+l > len(rest) {
			return msgs, malformed("w1_netlink_msg at offset %d has len %d, but only %d bytes follow its header", off, l, len(rest)-MsgHeaderLen)
		}
		m.Data = rest[MsgHeaderLen : MsgHeaderLen+l : MsgHeaderLen+l]
		if m.Type == MsgMasterCmd || m.Type == MsgSlaveCmd {
			cmds, err := ParseCmds(m.Data)
			if err != nil {
				return msgs, fmt.Errorf("w1_netlink_msg at offset %d: %w", off, err)
			}
			m.Cmds = cmds
		}
		msgs = append(msgs, m)
		off += MsgHeaderLen + l
	}
	return msgs, nil
}

// ParseCmds decodes the w1_netlink_cmd records packed in the payload of a
// MASTER_CMD or SLAVE_CMD message. The Data of each Cmd aliases b. Errors
// match connector.ErrMalformed.
func ParseCmds(b []byte) ([]Cmd, error) {
	var cmds []Cmd
	for off := 0; off < len(b); {
		rest := b[off:]
		if len(rest) < CmdHeaderLen {
			return cmds, malformed("%d bytes at offset %d are too short for the %d-byte w1_netlink_cmd header", len(rest), off, CmdHeaderLen)
		}
		l := int(binary.NativeEndian.Uint16(rest[2:4]))
		if CmdHeaderLen+l > len(rest) {
			return cmds, malformed("w1_netlink_cmd %v at offset %d has len %d, but only %d bytes follow its header", CmdType(rest[0]), off, l, len(rest)-CmdHeaderLen)
		}
		cmds = append(cmds, Cmd{Cmd: CmdType(rest[0]), Res: rest[1], Data: rest[CmdHeaderLen : CmdHeaderLen+l : CmdHeaderLen+l]})
		off += CmdHeaderLen + l
	}
	return cmds, nil
}

func malformed(format string, args ...any) error {
	return &connector.MessageError{Reason: fmt.Sprintf(format, args...)}
}

// IsStray reports whether m is the empty record with callback id 0:0 that the
// kernel sends ahead of some unbundled replies: those to a lone RESET, READ
// or TOUCH, whose first record asks w1_reply_make_space for as much room as
// the whole reply block has, so that it flushes the block's still empty,
// zeroed first cn_msg. It carries nothing and is to be skipped.
func IsStray(m connector.Message, from connector.Sender) bool {
	return from.Kernel() && m.ID == (connector.CBID{}) && len(m.Data) == 0
}
