package w1

import (
	"bytes"
	"testing"

	"github.com/cnlink/connector"
)

// FuzzParseMsgs checks that any payload decodes without panicking, and that
// what decodes re-encodes to the same bytes. The seeds in
// testdata/fuzz/FuzzParseMsgs (kernel-*) are cn_msg payloads captured from
// the kernels of the matrix, 6.1.192, 6.12.118, 6.18.15 and 7.3.4, which sent
// identical bytes: the integration tests log them as "seed" lines (data and
// status records bundled and not, a search result, LIST_MASTERS, MASTER_ADD,
// and the error statuses, E2BIG included). Those added here are built from
// the documented layout.
func FuzzParseMsgs(f *testing.F) {
	seed := func(msgs ...Msg) {
		var b []byte
		for _, m := range msgs {
			b, _ = AppendMsg(b, m)
		}
		f.Add(b)
	}
	seed(Msg{Type: MsgListMasters})
	seed(Msg{Type: MsgListMasters}, Msg{Type: MsgMasterCmd})
	seed(Msg{Type: MsgMasterCmd, ID: MasterMsgID(1), Cmds: []Cmd{{Cmd: CmdReset}, {Cmd: CmdWrite, Data: []byte{0xcc, 0x44}}, {Cmd: CmdRead, Data: make([]byte, 9)}}})
	seed(Msg{Type: MsgMasterCmd, Status: 255, ID: MasterMsgID(1), Cmds: []Cmd{{Cmd: CmdReset}}}, Msg{Type: MsgMasterCmd, ID: MasterMsgID(1), Cmds: []Cmd{{Cmd: CmdWrite}}})
	seed(Msg{Type: MsgSlaveAdd, ID: SlaveMsgID(NewSlaveID(0x28, 0x79e36c0))})
	seed(Msg{Type: 9, Data: []byte{1, 2, 3, 4}})
	f.Add([]byte{4, 0, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, err := ParseMsgs(b)
		if err != nil {
			return
		}
		var out []byte
		for _, m := range msgs {
			if out, err = AppendMsg(out, m); err != nil {
				t.Fatalf("re-encoding %+v: %v", m, err)
			}
			if m.Type == MsgListMasters {
				_, _ = m.Masters()
			}
			for _, c := range m.Cmds {
				_, _ = c.Slaves()
			}
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("round trip changed the bytes:\n in % x\nout % x", b, out)
		}
	})
}

// FuzzParseSlaveID checks that any text parses without panicking and that an
// id that parses prints back to text that parses to the same id.
func FuzzParseSlaveID(f *testing.F) {
	for _, s := range []string{"28-0000079e36c0", "01.665544332211.75", "28.0000079e36c0.18", "", "-", ".."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseSlaveID(s)
		if err != nil {
			return
		}
		if !id.Valid() {
			t.Fatalf("ParseSlaveID(%q) = % x with a bad CRC", s, id[:])
		}
		for _, text := range []string{id.String(), id.KernelString()} {
			back, err := ParseSlaveID(text)
			if err != nil || back != id {
				t.Fatalf("%q -> %v -> %q -> %v, %v", s, id, text, back, err)
			}
		}
	})
}

// FuzzReply feeds arbitrary records to the state machine that completes a
// request (one status per command, data records before them), as a faulty
// or hostile kernel might send them: it must never panic, never count more
// statuses than commands, and never write a data record into the wrong
// buffer.
func FuzzReply(f *testing.F) {
	f.Add(uint8(3), []byte{0, 4, 0, 4, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0})
	st, _ := AppendMsg(nil, Msg{Type: MsgMasterCmd, Status: 19, ID: MasterMsgID(1), Cmds: []Cmd{{Cmd: CmdRead}}})
	data, _ := AppendMsg(nil, Msg{Type: MsgMasterCmd, ID: MasterMsgID(1), Cmds: []Cmd{{Cmd: CmdRead, Data: []byte{1, 2}}}})
	f.Add(uint8(2), append(append([]byte{1}, data...), append([]byte{0}, st...)...))
	f.Fuzz(func(t *testing.T, ncmds uint8, b []byte) {
		req := connector.Message{ID: ID, Seq: 10, Ack: 99}
		dests := make([][]byte, ncmds%8)
		for i := range dests {
			dests[i] = make([]byte, i)
		}
		// w counts the records that fit no command, as a Conn's does.
		r := &reply{op: "fuzz", ncmds: len(dests), w: new(Conn), data: func(i int, c Cmd) error {
			if i < 0 || i >= len(dests) {
				t.Fatalf("data for command %d of %d", i, len(dests))
			}
			if len(c.Data) == len(dests[i]) {
				copy(dests[i], c.Data)
			}
			return nil
		}}
		// Records: a kind byte (odd: data, ack = seq+1; even: status) and
		// a length byte, then that many payload bytes.
		for len(b) >= 2 {
			kind, n := b[0], int(b[1])
			b = b[2:]
			n = min(n, len(b))
			m := connector.Message{ID: ID, Seq: req.Seq, Ack: req.Ack, Data: b[:n]}
			if kind%2 == 1 {
				m.Ack = req.Seq + 1
			}
			b = b[n:]
			if r.handle(req, m) {
				break
			}
		}
		if r.next > max(r.ncmds, 1) {
			t.Fatalf("%d statuses counted for %d commands", r.next, r.ncmds)
		}
		_ = r.err()
	})
}
