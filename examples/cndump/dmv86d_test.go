//go:build linux

package main

import (
	"strings"
	"syscall"
	"testing"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/dmlog"
	"github.com/cnlink/connector/v86d"
)

func dmRequest(t testing.TB, typ dmlog.RequestType, data []byte) connector.Message {
	b, err := dmlog.AppendRequest(nil, dmlog.Request{Header: dmlog.Header{LUID: 0xffff888004c0de00, UUID: "mirror-1", Version: dmlog.Version, Seq: 41, Type: typ}, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	return connector.Message{ID: connector.IDDM, Seq: 41, Data: b}
}

func TestDescribeDMV86D(t *testing.T) {
	kernel7 := connector.Sender{Group: 7}
	kernel4 := connector.Sender{Group: 4}
	user := connector.Sender{Port: 1234, Group: 7}
	ctrReply, _ := dmlog.AppendReply(nil, dmlog.Header{UUID: "mirror-1", Seq: 41, Type: dmlog.TypeCtr}, syscall.EINVAL, nil)
	vbe2 := make([]byte, v86d.InfoBlockLen)
	copy(vbe2, "VBE2")
	task, _ := v86d.AppendTask(nil, v86d.Task{Flags: v86d.FlagVBEIB, Regs: v86d.Regs{EAX: 0x4f00}}, vbe2)
	bios := &v86d.FakeBIOS{}
	out, buf := bios.Handle(&v86d.Call{Task: v86d.Task{Flags: v86d.FlagVBEIB, BufLen: v86d.InfoBlockLen, Regs: v86d.Regs{EAX: 0x4f00}}, Buf: vbe2})
	reply, _ := v86d.AppendTask(nil, out, buf)
	exit, _ := v86d.AppendTask(nil, v86d.Task{Flags: v86d.FlagExit}, nil)
	for _, c := range []struct {
		name string
		m    connector.Message
		from connector.Sender
		want string
	}{
		{"ctr", dmRequest(t, dmlog.TypeCtr, []byte("8192 core 1024")), kernel7, `request: CTR seq 41 uuid "mirror-1" luid 0xffff888004c0de00 version 3 args "8192 core 1024"`},
		{"re-ctr", dmRequest(t, dmlog.TypeCtr, []byte("8192 core 1024\x00")), kernel7, "(re-sent: the kernel is reconnecting to a server)"},
		{"mark", dmRequest(t, dmlog.TypeMarkRegion, dmlog.AppendUint64(dmlog.AppendUint64(nil, 2), 5)), kernel7, "MARK_REGION seq 41 uuid \"mirror-1\" luid 0xffff888004c0de00 version 3 regions [2 5]"},
		{"insync", dmRequest(t, dmlog.TypeInSync, dmlog.AppendUint64(nil, 7)), kernel7, "IN_SYNC seq 41 uuid \"mirror-1\" luid 0xffff888004c0de00 version 3 region 7"},
		{"setsync", dmRequest(t, dmlog.TypeSetRegionSync, dmlog.AppendRegionSync(nil, 3, true)), kernel7, "region 3 in_sync true"},
		{"bad", connector.Message{ID: connector.IDDM, Data: []byte{1, 2}}, kernel7, "request: dmlog: message shorter than its header says: 2 bytes"},
		{"eagain", connector.Message{ID: connector.IDDM, Seq: 9, Ack: uint32(syscall.EAGAIN)}, user, "ack: seq 9 errno 11 (resource temporarily unavailable): the kernel resends the request at once"},
		{"reply", connector.Message{ID: connector.IDDM, Data: ctrReply}, user, `reply: CTR seq 41 uuid "mirror-1" luid 0x0 error -22, 0 data bytes`},
		{"task", connector.Message{ID: connector.IDV86D, Seq: 3, Ack: 0xabc, Data: task}, kernel4, "v86d task slot 3 cookie 0xabc: eax 0x4f00 ebx 0x0 ecx 0x0 edx 0x0 es:di 0000:0000 flags VBEIB buffer 1024 bytes"},
		{"vbe reply", connector.Message{ID: connector.IDV86D, Seq: 3, Ack: 0xabc, Data: reply}, connector.Sender{Port: 99, Group: 4}, `"VESA" VBE 3.0, 16384 KiB, 3 modes`},
		{"exit", connector.Message{ID: connector.IDV86D, Data: exit}, kernel4, "v86d task slot 0: TF_EXIT"},
		{"short task", connector.Message{ID: connector.IDV86D, Data: []byte{1}}, kernel4, "v86d task: v86d: message shorter than its task says"},
		{"proc", connector.Message{ID: connector.IDProc, Data: []byte{1}}, connector.Sender{Group: 1}, ""},
	} {
		got := describeDMV86D(c.m, c.from)
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("%s: %q, want it to contain %q", c.name, got, c.want)
		}
	}
}

func FuzzDescribeDMV86D(f *testing.F) {
	f.Add(uint32(7), dmRequest(f, dmlog.TypeFlush, dmlog.AppendUint64(nil, 1)).Data, true)
	task, _ := v86d.AppendTask(nil, v86d.Task{Flags: v86d.FlagVBEIB}, make([]byte, v86d.InfoBlockLen))
	f.Add(uint32(4), task, false)
	f.Fuzz(func(t *testing.T, idx uint32, data []byte, kernel bool) {
		from := connector.Sender{Port: 1, Group: connector.Group(idx % 33)}
		if kernel {
			from.Port = 0
		}
		s := describeDMV86D(connector.Message{ID: connector.CBID{Idx: 4 + 3*(idx%2), Val: 1}, Data: data}, from)
		if s != "" && !strings.HasSuffix(s, "\n") {
			t.Fatalf("unterminated line %q", s)
		}
	})
}
