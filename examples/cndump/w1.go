//go:build linux

package main

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/w1"
)

// describeW1 decodes a message of the w1 agent (id 3:1) for the dump, one
// indented line per w1_netlink_msg and per command, and explains the empty
// 0:0 record the kernel sends ahead of some unbundled w1 replies. It returns
// "" for other messages.
func describeW1(m connector.Message, from connector.Sender) string {
	if w1.IsStray(m, from) {
		return "  w1: empty 0:0 record, sent by the kernel ahead of an unbundled w1 reply; it carries nothing\n"
	}
	if m.ID != w1.ID {
		return ""
	}
	var b strings.Builder
	kind := "request"
	switch {
	case from.Kernel() && from.Group == w1.Group:
		kind = "notification"
	case from.Kernel() && m.Ack == m.Seq+1:
		kind = "data reply"
	case from.Kernel():
		kind = "status reply"
	}
	if m.Flags&w1.FlagBundle != 0 {
		kind += ", bundled"
	}
	msgs, err := w1.ParseMsgs(m.Data)
	for _, msg := range msgs {
		fmt.Fprintf(&b, "  w1 %s: %v %s", kind, msg.Type, w1Target(msg))
		if msg.Status != 0 {
			fmt.Fprintf(&b, " status %d", msg.Status)
			if msg.Status == w1.StatusNoPresence {
				b.WriteString(" (no presence)")
			}
		}
		b.WriteByte('\n')
		if msg.Type == w1.MsgListMasters {
			ids, _ := msg.Masters()
			fmt.Fprintf(&b, "    masters %v\n", ids)
		}
		for i, c := range msg.Cmds {
			fmt.Fprintf(&b, "    cmd %d %v len %d", i, c.Cmd, len(c.Data))
			switch c.Cmd {
			case w1.CmdSearch, w1.CmdAlarmSearch, w1.CmdListSlaves, w1.CmdSlaveAdd, w1.CmdSlaveRemove:
				if ids, err := c.Slaves(); err == nil && len(ids) > 0 {
					fmt.Fprintf(&b, ": %v", ids)
				}
			default:
				if len(c.Data) > 0 {
					fmt.Fprintf(&b, ": %s", hex.EncodeToString(c.Data[:min(len(c.Data), 32)]))
					if len(c.Data) > 32 {
						b.WriteString("...")
					}
				}
			}
			b.WriteByte('\n')
		}
	}
	if err != nil {
		fmt.Fprintf(&b, "  w1: cannot decode: %v\n", err)
	}
	return b.String()
}

// w1Target names what a w1_netlink_msg is about.
func w1Target(msg w1.Msg) string {
	switch msg.Type {
	case w1.MsgMasterAdd, w1.MsgMasterRemove, w1.MsgMasterCmd:
		return msg.Master().String()
	case w1.MsgSlaveAdd, w1.MsgSlaveRemove, w1.MsgSlaveCmd:
		return msg.Slave().String()
	}
	return ""
}
