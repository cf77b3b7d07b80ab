package w1_test

import (
	"context"
	"testing"

	"github.com/cnlink/connector/w1"
)

// BenchmarkParseMsgs decodes the payload of a bundled status record holding
// two w1_netlink_msg, as captured from the kernels of the matrix.
func BenchmarkParseMsgs(b *testing.B) {
	var p []byte
	p, _ = w1.AppendMsg(p, w1.Msg{Type: w1.MsgMasterCmd, ID: w1.MasterMsgID(1), Cmds: []w1.Cmd{{Cmd: w1.CmdReset}}})
	p, _ = w1.AppendMsg(p, w1.Msg{Type: w1.MsgMasterCmd, ID: w1.MasterMsgID(1), Cmds: []w1.Cmd{{Cmd: w1.CmdWrite}}})
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if _, err := w1.ParseMsgs(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTransaction runs a reset-write-read transaction through a Conn
// against the fake agent: the client's whole path (encode, Exchange through
// the Mux, decode) plus the fake's reply building, per transaction.
func BenchmarkTransaction(b *testing.B) {
	for _, mode := range modes {
		b.Run(mode.name, func(b *testing.B) {
			_, a, w := fake(b, mode.cfg)
			m := a.AddMaster()
			ctx := context.Background()
			buf := make([]byte, 9)
			b.ReportAllocs()
			for b.Loop() {
				if err := w.Master(m).Reset().Write([]byte{0xcc, 0xbe}).Read(buf).Do(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
