package w1

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/cnlink/connector"
	"github.com/google/go-cmp/cmp"
)

// le builds little-endian test input: bytes, u16 (as [2]byte) and u32 ids.
func u16(v uint16) []byte { return binary.NativeEndian.AppendUint16(nil, v) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestAppendMsgLayout(t *testing.T) {
	// A MASTER_CMD for master 1 with RESET and WRITE {0xcc, 0x44}, laid out
	// by hand from struct w1_netlink_msg and struct w1_netlink_cmd.
	want := cat(
		[]byte{4, 0}, u16(4+4+2), binary.NativeEndian.AppendUint32(nil, 1), []byte{0, 0, 0, 0},
		[]byte{5, 0}, u16(0),
		[]byte{1, 0}, u16(2), []byte{0xcc, 0x44},
	)
	got, err := AppendMsg(nil, Msg{Type: MsgMasterCmd, ID: MasterMsgID(1), Cmds: []Cmd{{Cmd: CmdReset}, {Cmd: CmdWrite, Data: []byte{0xcc, 0x44}}}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendMsg = % x\nwant        % x", got, want)
	}
	msgs, err := ParseMsgs(got)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].Master() != 1 || len(msgs[0].Cmds) != 2 || msgs[0].Cmds[1].Cmd != CmdWrite || !bytes.Equal(msgs[0].Cmds[1].Data, []byte{0xcc, 0x44}) {
		t.Fatalf("ParseMsgs = %+v", msgs)
	}
}

func TestParseMsgsSeveral(t *testing.T) {
	// A bundled status cn_msg holds several w1_netlink_msg; LIST_MASTERS
	// data is not decoded as commands.
	var b []byte
	b, _ = AppendMsg(b, Msg{Type: MsgMasterCmd, Status: 0, ID: MasterMsgID(1), Cmds: []Cmd{{Cmd: CmdReset}}})
	b, _ = AppendMsg(b, Msg{Type: MsgMasterCmd, Status: 19, ID: MasterMsgID(1), Cmds: []Cmd{{Cmd: CmdWrite}}})
	b, _ = AppendMsg(b, Msg{Type: MsgListMasters, Data: cat(binary.NativeEndian.AppendUint32(nil, 1), binary.NativeEndian.AppendUint32(nil, 7))})
	b, _ = AppendMsg(b, Msg{Type: MsgSlaveAdd, ID: SlaveMsgID(NewSlaveID(0x28, 0x79e36c0))})
	msgs, err := ParseMsgs(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 4 {
		t.Fatalf("got %d messages, want 4", len(msgs))
	}
	if msgs[1].Status != 19 || msgs[1].Cmds[0].Cmd != CmdWrite {
		t.Errorf("second message = %+v", msgs[1])
	}
	ids, err := msgs[2].Masters()
	if err != nil || !cmp.Equal(ids, []MasterID{1, 7}) || msgs[2].Cmds != nil {
		t.Errorf("LIST_MASTERS = %v, %v, cmds %v", ids, err, msgs[2].Cmds)
	}
	if got := msgs[3].Slave().String(); got != "28-0000079e36c0" {
		t.Errorf("SLAVE_ADD id = %s", got)
	}
}

func TestParseMsgsErrors(t *testing.T) {
	good, _ := AppendMsg(nil, Msg{Type: MsgMasterCmd, ID: MasterMsgID(1), Cmds: []Cmd{{Cmd: CmdRead, Data: make([]byte, 3)}}})
	cases := []struct {
		name string
		b    []byte
		n    int // messages decoded before the error
		want string
	}{
		{"short header", good[:11], 0, "too short for the 12-byte w1_netlink_msg header"},
		{"len past end", good[:len(good)-1], 0, "has len 7, but only 6 bytes follow"},
		{"short command", cat(good, []byte{4, 0}, u16(2), make([]byte, 8), []byte{1, 0}), 1, "too short for the 4-byte w1_netlink_cmd header"},
		{"command past end", cat(good, []byte{4, 0}, u16(4), make([]byte, 8), []byte{0, 0}, u16(9)), 1, "READ at offset 0 has len 9"},
		{"trailing byte", cat(good, []byte{0}), 1, "1 bytes at offset 19"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msgs, err := ParseMsgs(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if !errors.Is(err, connector.ErrMalformed) {
				t.Errorf("err %v does not match connector.ErrMalformed", err)
			}
			if len(msgs) != tc.n {
				t.Errorf("decoded %d messages before the error, want %d", len(msgs), tc.n)
			}
		})
	}
}

func TestAppendMsgLimits(t *testing.T) {
	if _, err := AppendMsg(nil, Msg{Type: MsgMasterCmd, Cmds: []Cmd{{Cmd: CmdWrite, Data: make([]byte, 0x10000)}}}); err == nil {
		t.Error("a 65536-byte command was encoded")
	}
	if _, err := AppendMsg(nil, Msg{Type: MsgMasterCmd, Cmds: []Cmd{{Cmd: CmdWrite, Data: make([]byte, 0xffff)}}}); err == nil {
		t.Error("a message payload of 65539 bytes was encoded")
	}
	b := []byte{1, 2}
	if got, _ := AppendMsg(b, Msg{Data: make([]byte, 0x10000)}); !bytes.Equal(got, b) {
		t.Error("a failed AppendMsg changed its input")
	}
}

func TestSlavesAndMastersDecode(t *testing.T) {
	id := NewSlaveID(0x28, 1)
	ids, err := Cmd{Cmd: CmdSearch, Data: cat(id[:], id[:])}.Slaves()
	if err != nil || len(ids) != 2 || ids[1] != id {
		t.Errorf("Slaves = %v, %v", ids, err)
	}
	if _, err := (Cmd{Cmd: CmdSearch, Data: make([]byte, 9)}).Slaves(); !errors.Is(err, connector.ErrMalformed) {
		t.Errorf("9-byte slave list: err = %v", err)
	}
	if _, err := (Msg{Type: MsgListMasters, Data: make([]byte, 5)}).Masters(); !errors.Is(err, connector.ErrMalformed) {
		t.Errorf("5-byte master list: err = %v", err)
	}
}

func TestIsStray(t *testing.T) {
	stray := connector.Message{}
	if !IsStray(stray, connector.Sender{}) {
		t.Error("the empty 0:0 record from the kernel is not a stray")
	}
	if IsStray(stray, connector.Sender{Port: 5}) {
		t.Error("a record from a userspace port is a stray")
	}
	if IsStray(connector.Message{ID: ID}, connector.Sender{}) {
		t.Error("an empty w1 record is a stray")
	}
}

func TestNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{MsgSlaveCmd.String(), "SLAVE_CMD"}, {MsgType(9).String(), "MSG_9"},
		{CmdListSlaves.String(), "LIST_SLAVES"}, {CmdType(17).String(), "CMD_17"},
		{MasterID(1).String(), "w1_bus_master1"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
