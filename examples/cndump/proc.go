//go:build linux

package main

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/proc"
)

// Subscription operations (enum proc_cn_mcast_op in
// include/uapi/linux/cn_proc.h, Linux 2.6.15). cndump sends the classic
// 4-byte form, which every kernel accepts and which subscribes to all kinds.
const (
	procOpListen uint32 = 1 // PROC_CN_MCAST_LISTEN
	procOpIgnore uint32 = 2 // PROC_CN_MCAST_IGNORE
)

// sendProcOp sends a subscription request to the process events connector
// (port 0). The kernel answers with an acknowledgement on group 1, which
// cndump prints like any other message.
func sendProcOp(c *connector.Conn, op uint32) error {
	data := binary.NativeEndian.AppendUint32(nil, op)
	return c.Send(connector.Message{ID: connector.IDProc, Ack: op, Data: data})
}

// describeProc decodes a process event for the dump.
func describeProc(m connector.Message) string {
	var ev proc.Event
	if err := proc.Decode(m, &ev); err != nil {
		return "proc: cannot decode: " + err.Error()
	}
	s := "proc " + ev.String()
	switch ev.Kind {
	case proc.KindExit:
		ws := ev.WaitStatus()
		switch {
		case ws.Exited():
			s += fmt.Sprintf(" (exited with status %d)", ws.ExitStatus())
		case ws.Signaled() && ws.CoreDump():
			s += fmt.Sprintf(" (killed by %v, core dumped)", ws.Signal())
		case ws.Signaled():
			s += fmt.Sprintf(" (killed by %v)", ws.Signal())
		}
	case proc.KindNone:
		if ev.AckErr != 0 {
			s += fmt.Sprintf(" (subscription failed: %v)", errnoString(ev.AckErr))
		} else {
			s += " (subscription acknowledged)"
		}
	}
	return s
}

func errnoString(e uint32) string {
	return fmt.Sprintf("%v (errno %d)", syscall.Errno(e), e)
}
