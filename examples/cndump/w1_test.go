//go:build linux

package main

import (
	"strings"
	"testing"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/w1"
)

func TestDescribeW1(t *testing.T) {
	enc := func(msgs ...w1.Msg) []byte {
		var b []byte
		for _, m := range msgs {
			b, _ = w1.AppendMsg(b, m)
		}
		return b
	}
	id := w1.NewSlaveID(0x28, 0x79e36c0)
	kid := id.Kernel()
	for _, tc := range []struct {
		name string
		m    connector.Message
		from connector.Sender
		want []string
	}{
		{"stray", connector.Message{}, connector.Sender{}, []string{"empty 0:0 record"}},
		{"other agent", connector.Message{ID: connector.IDProc}, connector.Sender{}, nil},
		{"data", connector.Message{ID: w1.ID, Seq: 4, Ack: 5, Flags: w1.FlagBundle, Data: enc(w1.Msg{Type: w1.MsgMasterCmd, ID: w1.MasterMsgID(1), Cmds: []w1.Cmd{{Cmd: w1.CmdSearch, Data: kid[:]}}})},
			connector.Sender{}, []string{"w1 data reply, bundled: MASTER_CMD w1_bus_master1", "cmd 0 SEARCH len 8: [28-0000079e36c0]"}},
		{"status", connector.Message{ID: w1.ID, Seq: 4, Ack: 99, Data: enc(w1.Msg{Type: w1.MsgMasterCmd, Status: 255, ID: w1.MasterMsgID(1), Cmds: []w1.Cmd{{Cmd: w1.CmdReset}}}, w1.Msg{Type: w1.MsgMasterCmd, ID: w1.MasterMsgID(1), Cmds: []w1.Cmd{{Cmd: w1.CmdRead, Data: []byte{1, 2}}}})},
			connector.Sender{}, []string{"status 255 (no presence)", "cmd 0 RESET len 0", "cmd 0 READ len 2: 0102"}},
		{"notification", connector.Message{ID: w1.ID, Seq: 2, Data: enc(w1.Msg{Type: w1.MsgSlaveAdd, ID: w1.SlaveMsgID(id)})}, connector.Sender{Group: w1.Group}, []string{"w1 notification: SLAVE_ADD 28-0000079e36c0"}},
		{"masters", connector.Message{ID: w1.ID, Seq: 1, Ack: 2, Data: enc(w1.Msg{Type: w1.MsgListMasters, Data: []byte{1, 0, 0, 0}})}, connector.Sender{}, []string{"masters [w1_bus_master1]"}},
		{"malformed", connector.Message{ID: w1.ID, Data: []byte{4, 0, 9}}, connector.Sender{}, []string{"w1: cannot decode"}},
	} {
		got := describeW1(tc.m, tc.from)
		if tc.want == nil && got != "" {
			t.Errorf("%s: %q, want nothing", tc.name, got)
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q does not contain %q", tc.name, got, w)
			}
		}
	}
}

// FuzzDescribeW1 checks that any w1 payload from any sender is described
// without panicking.
func FuzzDescribeW1(f *testing.F) {
	f.Add([]byte{4, 0, 4, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0}, uint32(0), uint8(0), uint32(7))
	f.Add([]byte{6, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, uint32(0), uint8(0), uint32(8))
	f.Add([]byte{0, 0, 0, 0, 0x28, 1, 0, 0, 0, 0, 0, 0x9a}, uint32(0), uint8(3), uint32(0))
	f.Fuzz(func(t *testing.T, data []byte, port uint32, group uint8, ack uint32) {
		m := connector.Message{ID: w1.ID, Seq: 7, Ack: ack, Flags: uint16(group & 1), Data: data}
		if s := describeW1(m, connector.Sender{Port: port, Group: connector.Group(group % 33)}); len(data) > 0 && s == "" {
			t.Fatalf("no description for % x", data)
		}
	})
}
