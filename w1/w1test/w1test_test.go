package w1test_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/testutil"
	"github.com/cnlink/connector/w1"
	"github.com/cnlink/connector/w1/w1test"
)

// record is one received cn_msg with the datagram it came in.
type record struct {
	m        connector.Message
	from     connector.Sender
	datagram int
	msgs     []w1.Msg
}

// exchange sends a raw request and returns every record the fake sent back
// (the fake answers within Send).
func exchange(t *testing.T, k *cntest.Kernel, c *connector.Conn, req connector.Message) []record {
	t.Helper()
	if err := c.Send(req); err != nil {
		t.Fatal(err)
	}
	var recs []record
	for n := 0; k.Queued(c.PortID()) > 0; n++ {
		msgs, from, err := c.Receive()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			wm, err := w1.ParseMsgs(m.Data)
			if err != nil {
				t.Fatalf("record %d does not decode: %v", len(recs), err)
			}
			recs = append(recs, record{m: m, from: from, datagram: n, msgs: wm})
		}
	}
	return recs
}

func setup(t *testing.T) (*cntest.Kernel, *w1test.Agent, *connector.Conn) {
	k := cntest.New(nil)
	a := w1test.New(k)
	c, err := k.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return k, a, c
}

// payload packs msgs as one request payload.
func payload(t *testing.T, msgs ...w1.Msg) []byte {
	t.Helper()
	return testutil.AppendAll(t, w1.AppendMsg, msgs...)
}

func TestListMasters(t *testing.T) {
	k, a, c := setup(t)
	req := connector.Message{ID: w1.ID, Seq: 7, Ack: 100, Data: payload(t, w1.Msg{Type: w1.MsgListMasters})}
	recs := exchange(t, k, c, req)
	if len(recs) != 1 || recs[0].m.Ack != 8 || recs[0].m.Seq != 7 || len(recs[0].msgs[0].Data) != 0 {
		t.Fatalf("no masters: %+v", recs)
	}
	a.AddMaster()
	a.AddMaster()
	recs = exchange(t, k, c, req)
	ids, _ := recs[0].msgs[0].Masters()
	if !slices.Equal(ids, []w1.MasterID{1, 2}) {
		t.Fatalf("masters = %v", ids)
	}
}

// The measurement of agents.md 1.4 on all four kernels: MASTER_CMD [RESET,
// WRITE 2, READ 3, TOUCH 2, LIST_SLAVES, SEARCH] gives ten datagrams
// unbundled (six status records, four data records), and one 380-byte
// datagram of nine cn_msg bundled, where the RESET and WRITE statuses share
// one cn_msg of len 32.
func TestReplyShape(t *testing.T) {
	msg := w1.Msg{Type: w1.MsgMasterCmd, ID: w1.MasterMsgID(1), Cmds: []w1.Cmd{
		{Cmd: w1.CmdReset}, {Cmd: w1.CmdWrite, Data: []byte{1, 2}}, {Cmd: w1.CmdRead, Data: make([]byte, 3)},
		{Cmd: w1.CmdTouch, Data: []byte{0xff, 0xff}}, {Cmd: w1.CmdListSlaves}, {Cmd: w1.CmdSearch},
	}}
	for _, bundle := range []bool{false, true} {
		k, a, c := setup(t)
		m := a.AddMaster()
		// The matrix's i2c-stub bus answers a search with two all-zero
		// ids, which the kernel reports but does not register.
		a.AttachDevice(m, w1.SlaveID{})
		a.AttachDevice(m, w1.SlaveID{})
		req := connector.Message{ID: w1.ID, Seq: 460, Ack: 9000, Data: payload(t, msg)}
		if bundle {
			req.Flags = w1.FlagBundle
		}
		recs := exchange(t, k, c, req)
		status, data := 0, 0
		for _, r := range recs {
			switch r.m.Ack {
			case req.Ack:
				status += len(r.msgs)
			case req.Seq + 1:
				data += len(r.msgs)
			default:
				t.Errorf("record with ack %d", r.m.Ack)
			}
			if r.m.Seq != req.Seq || r.m.Flags != req.Flags {
				t.Errorf("record seq %d flags %d", r.m.Seq, r.m.Flags)
			}
		}
		if status != 6 || data != 4 {
			t.Errorf("bundle %v: %d status and %d data records, want 6 and 4", bundle, status, data)
		}
		datagrams := recs[len(recs)-1].datagram + 1
		if !bundle && (datagrams != 10 || len(recs) != 10) {
			t.Errorf("unbundled: %d records in %d datagrams, want 10 in 10", len(recs), datagrams)
		}
		if bundle {
			size := 16
			for _, r := range recs {
				size += r.m.Len()
			}
			if datagrams != 1 || len(recs) != 9 || (size+3)&^3 != 380 || recs[0].m.Len() != 20+32 {
				t.Errorf("bundled: %d records in %d datagrams of %d bytes, first cn_msg len %d; want 9 in 1 of 380, 32", len(recs), datagrams, size, len(recs[0].m.Data))
			}
		}
	}
}

// A lone RESET without bundling is preceded by an empty 0:0 record in a
// 36-byte datagram (agents.md 1.8).
func TestStrayRecord(t *testing.T) {
	k, a, c := setup(t)
	a.AddMaster()
	a.SetPresence(1, false)
	req := connector.Message{ID: w1.ID, Seq: 1, Ack: 77, Data: payload(t, w1.Msg{Type: w1.MsgMasterCmd, ID: w1.MasterMsgID(1), Cmds: []w1.Cmd{{Cmd: w1.CmdReset}}})}
	recs := exchange(t, k, c, req)
	if len(recs) != 2 || !w1.IsStray(recs[0].m, recs[0].from) {
		t.Fatalf("records %+v, want a stray and a status", recs)
	}
	st := recs[1].msgs[0]
	if recs[1].m.Ack != 77 || st.Status != w1.StatusNoPresence || st.Cmds[0].Cmd != w1.CmdReset {
		t.Errorf("status record %+v", st)
	}
	req.Flags = w1.FlagBundle
	recs = exchange(t, k, c, req)
	if len(recs) != 1 || w1.IsStray(recs[0].m, recs[0].from) {
		t.Errorf("bundled: %+v, want the status alone", recs)
	}
}

// The message-level and command-level errors of agents.md 1.5.
func TestErrors(t *testing.T) {
	k, a, c := setup(t)
	a.AddMaster()
	m1 := w1.MasterMsgID(1)
	cases := []struct {
		name   string
		flags  uint16
		msg    w1.Msg
		status uint8
		cmd    bool
	}{
		{"unknown flag", 2, w1.Msg{Type: w1.MsgMasterCmd, ID: m1, Cmds: []w1.Cmd{{Cmd: w1.CmdReset}}}, 22, false},
		{"unknown master", 0, w1.Msg{Type: w1.MsgMasterCmd, ID: w1.MasterMsgID(999), Cmds: []w1.Cmd{{Cmd: w1.CmdReset}}}, 19, false},
		{"unknown slave", 0, w1.Msg{Type: w1.MsgSlaveCmd, ID: w1.NewSlaveID(0x28, 1), Cmds: []w1.Cmd{{Cmd: w1.CmdRead, Data: []byte{0}}}}, 19, false},
		{"empty command list", 0, w1.Msg{Type: w1.MsgMasterCmd, ID: m1}, 71, false},
		{"bad type", 0, w1.Msg{Type: 9, Data: []byte{1, 2, 3, 4}}, 71, false},
		{"bad command", 0, w1.Msg{Type: w1.MsgMasterCmd, ID: m1, Cmds: []w1.Cmd{{Cmd: 17}}}, 22, true},
		{"command past its message", 0, w1.Msg{Type: w1.MsgMasterCmd, ID: m1, Data: []byte{byte(w1.CmdWrite), 0, 10, 0, 1, 2, 3, 4}}, 7, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			flags := tc.flags
			if flags == 0 {
				flags = w1.FlagBundle // no stray record
			}
			req := connector.Message{ID: w1.ID, Seq: 3, Ack: 5, Flags: flags, Data: payload(t, tc.msg)}
			recs := exchange(t, k, c, req)
			if len(recs) != 1 || len(recs[0].msgs) != 1 {
				t.Fatalf("records %+v, want one", recs)
			}
			r := recs[0]
			if r.m.Ack != 5 || r.m.Flags != req.Flags || r.msgs[0].Status != tc.status || (len(r.msgs[0].Cmds) == 1) != tc.cmd {
				t.Errorf("got ack %d flags %d %+v; want status %d, command header %v", r.m.Ack, r.m.Flags, r.msgs[0], tc.status, tc.cmd)
			}
		})
	}
}

func TestSlaves(t *testing.T) {
	k, a, c := setup(t)
	m := a.AddMaster()
	events, err := k.Dial(&connector.Config{Groups: []connector.Group{w1.Group}})
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	s1, s2 := w1.NewSlaveID(0x28, 1), w1.NewSlaveID(0x2d, 2)
	a.AttachDevice(m, s1)
	a.AttachDevice(m, s2)
	search := connector.Message{ID: w1.ID, Seq: 1, Ack: 50, Flags: w1.FlagBundle, Data: payload(t, w1.Msg{Type: w1.MsgMasterCmd, ID: w1.MasterMsgID(m), Cmds: []w1.Cmd{{Cmd: w1.CmdSearch}}})}
	recs := exchange(t, k, c, search)
	var found []w1.SlaveID
	for _, r := range recs {
		for _, msg := range r.msgs {
			if r.m.Ack == 2 {
				ids, _ := msg.Cmds[0].Slaves()
				found = append(found, ids...)
			}
		}
	}
	if !slices.Equal(found, []w1.SlaveID{s1, s2}) || !slices.Equal(a.Slaves(m), found) {
		t.Fatalf("search found %v, kernel list %v", found, a.Slaves(m))
	}
	// Notifications: none for the master (this socket joined later), one
	// SLAVE_ADD per slave with the master's seq counting on from 2.
	for i, want := range []w1.SlaveID{s1, s2} {
		msgs, from, err := events.Receive()
		if err != nil {
			t.Fatal(err)
		}
		wm, _ := w1.ParseMsgs(msgs[0].Data)
		if from.Group != w1.Group || msgs[0].Seq != uint32(2+i) || wm[0].Type != w1.MsgSlaveAdd || wm[0].Slave() != want {
			t.Errorf("notification %d: %v seq %d %+v", i, from, msgs[0].Seq, wm[0])
		}
	}
	// A slave transaction selects with MATCH ROM (two slaves) and reads.
	a.QueueRead(m, []byte{0xaa, 0xbb})
	a.Written(m)
	tx := connector.Message{ID: w1.ID, Seq: 2, Ack: 60, Flags: w1.FlagBundle, Data: payload(t, w1.Msg{Type: w1.MsgSlaveCmd, ID: w1.SlaveMsgID(s2), Cmds: []w1.Cmd{{Cmd: w1.CmdWrite, Data: []byte{0xbe}}, {Cmd: w1.CmdRead, Data: make([]byte, 2)}}})}
	recs = exchange(t, k, c, tx)
	var read []byte
	for _, r := range recs {
		if r.m.Ack == 3 {
			read = r.msgs[0].Cmds[0].Data
		}
	}
	if !bytes.Equal(read, []byte{0xaa, 0xbb}) {
		t.Errorf("read % x", read)
	}
	if w := a.Written(m); !bytes.Equal(w, append(append([]byte{0x55}, s2[:]...), 0xbe)) {
		t.Errorf("bus saw % x", w)
	}
	_ = binary.NativeEndian
}

// A slave list longer than a reply block holds is split over several data
// records of the same command, then the one status, as w1_send_slave does.
func TestListSplit(t *testing.T) {
	for _, flags := range []uint16{0, w1.FlagBundle} {
		k, a, c := setup(t)
		m := a.AddMaster()
		var want []w1.SlaveID
		for i := range 2100 {
			want = append(want, w1.NewSlaveID(0x28, uint64(i)))
		}
		a.RegisterSlave(m, want...)
		req := connector.Message{ID: w1.ID, Seq: 9, Ack: 40, Flags: flags, Data: payload(t, w1.Msg{Type: w1.MsgMasterCmd, ID: w1.MasterMsgID(m), Cmds: []w1.Cmd{{Cmd: w1.CmdListSlaves}}})}
		var got []w1.SlaveID
		data, status := 0, 0
		for _, r := range exchange(t, k, c, req) {
			for _, msg := range r.msgs {
				if r.m.Ack == req.Seq+1 {
					data++
					ids, err := msg.Cmds[0].Slaves()
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, ids...)
				} else {
					status++
				}
			}
		}
		if data < 2 || status != 1 || !slices.Equal(got, want) {
			t.Errorf("flags %d: %d data records, %d statuses, %d ids; want the 2100 ids split, one status", flags, data, status, len(got))
		}
	}
}

// Replies that do not fit the requester's queue are recorded, not lost
// silently (the kernel would block instead).
func TestDropped(t *testing.T) {
	k := cntest.New(&cntest.Options{QueueLen: 2})
	a := w1test.New(k)
	m := a.AddMaster()
	c, err := k.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := connector.Message{ID: w1.ID, Seq: 1, Ack: 50, Data: payload(t, w1.Msg{Type: w1.MsgMasterCmd, ID: w1.MasterMsgID(m), Cmds: []w1.Cmd{{Cmd: w1.CmdReset}, {Cmd: w1.CmdReset}, {Cmd: w1.CmdReset}}})}
	if err := c.Send(req); err != nil {
		t.Fatal(err)
	}
	if d := a.Dropped(); len(d) != 1 {
		t.Errorf("Dropped = %v, want the third of three unbundled statuses", d)
	}
}

// TestUnknownMaster: every method that takes a master id panics, naming
// itself, the id and the masters there are, for an id never added and for
// a master removed already; on a master that exists it works.
func TestUnknownMaster(t *testing.T) {
	a := w1test.New(cntest.New(nil))
	id := w1.NewSlaveID(0x28, 0x79e36c0)
	calls := map[string]func(w1.MasterID){
		"SetPresence":   func(m w1.MasterID) { a.SetPresence(m, false) },
		"AttachDevice":  func(m w1.MasterID) { a.AttachDevice(m, id) },
		"RegisterSlave": func(m w1.MasterID) { a.RegisterSlave(m, id) },
		"SetAlarm":      func(m w1.MasterID) { a.SetAlarm(m, id) },
		"QueueRead":     func(m w1.MasterID) { a.QueueRead(m, []byte{1}) },
		"Written":       func(m w1.MasterID) { a.Written(m) },
		"Slaves":        func(m w1.MasterID) { a.Slaves(m) },
	}
	panicked := func(f func()) (msg string) {
		defer func() {
			if r := recover(); r != nil {
				msg = fmt.Sprint(r)
			}
		}()
		f()
		return ""
	}
	check := func(m w1.MasterID, have string) {
		t.Helper()
		for name, call := range calls {
			want := fmt.Sprintf("w1test: %s: the agent has no bus master %d (its masters: %s)", name, m, have)
			if got := panicked(func() { call(m) }); got != want {
				t.Errorf("%s(%d): panic %q, want %q", name, m, got, want)
			}
		}
	}
	check(1, "none (AddMaster adds one)")
	m1, m2 := a.AddMaster(), a.AddMaster()
	for name, call := range calls {
		if got := panicked(func() { call(m1) }); got != "" {
			t.Errorf("%s(%d) on an existing master: panic %q", name, m1, got)
		}
	}
	if !slices.Equal(a.Slaves(m1), []w1.SlaveID{id}) {
		t.Errorf("Slaves(%d) = %v, want the registered %v", m1, a.Slaves(m1), id)
	}
	check(99, fmt.Sprintf("%d, %d", m1, m2))
	if !a.RemoveMaster(m1) {
		t.Fatalf("RemoveMaster(%d) = false", m1)
	}
	check(m1, fmt.Sprintf("%d", m2))
}
