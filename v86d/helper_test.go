package v86d

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/testutil"
)

// fakeUvesafb plays the kernel side on a cntest.Kernel: it multicasts tasks
// on group 4 as uvesafb_exec does (seq = slot, ack = a cookie) and collects
// the replies sent to port 0.
type fakeUvesafb struct {
	t       *testing.T
	k       *cntest.Kernel
	replies chan connector.Message
	slot    uint32
}

func newFakeUvesafb(t *testing.T) *fakeUvesafb {
	f := &fakeUvesafb{t: t, k: cntest.New(nil), replies: make(chan connector.Message, 16)}
	f.k.Handle(connector.IDV86D, func(m connector.Message, _ connector.Sender) []cntest.Reply {
		f.replies <- m
		return nil
	})
	return f
}

func (f *fakeUvesafb) serve(h *Helper) (stop func() error) {
	stop, _ = f.serveDone(h)
	return stop
}

// serveDone also returns a channel that yields Serve's result.
func (f *fakeUvesafb) serveDone(h *Helper) (stop func() error, result <-chan error) {
	c, err := f.k.Dial(nil)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Serve(ctx, c) }()
	if !f.k.WaitReceiving(c.PortID(), 5*time.Second) {
		f.t.Fatal("Serve never received")
	}
	stopped := false
	var serr error
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			serr = <-done
			c.Close()
		}
		return serr
	}
	res := make(chan error, 1)
	go func() {
		// Forward Serve's result without consuming it for stop.
		err := <-done
		res <- err
		done <- err
	}()
	f.t.Cleanup(func() { stop() })
	return stop, res
}

func (f *fakeUvesafb) send(t Task, buf []byte) (slot, ack uint32) {
	f.t.Helper()
	b, err := AppendTask(nil, t, buf)
	if err != nil {
		f.t.Fatal(err)
	}
	slot, ack = f.slot, 0x9e3779b9*(f.slot+1)
	f.slot = (f.slot + 1) % TasksMax
	if n, err := f.k.Multicast(4, connector.Message{ID: connector.IDV86D, Seq: slot, Ack: ack, Data: b}); n != 1 || err != nil {
		f.t.Fatalf("multicast: %d, %v", n, err)
	}
	return slot, ack
}

// exec sends a task and returns the decoded reply, checking that the kernel
// would take it: same slot and cookie, buf_len within the request's.
func (f *fakeUvesafb) exec(t Task, buf []byte) (Task, []byte) {
	f.t.Helper()
	slot, ack := f.send(t, buf)
	select {
	case m := <-f.replies:
		if m.Seq != slot || m.Ack != ack {
			f.t.Fatalf("reply slot %d ack %#x, want %d %#x", m.Seq, m.Ack, slot, ack)
		}
		rt, rbuf, err := ParseTask(m.Data)
		if err != nil {
			f.t.Fatal(err)
		}
		if rt.BufLen > uint32(len(buf)) {
			f.t.Fatalf("reply buf_len %d above the request's %d: the kernel drops it", rt.BufLen, len(buf))
		}
		return rt, rbuf
	case <-time.After(5 * time.Second):
		f.t.Fatal("no reply within uvesafb's 5 s")
	}
	panic("unreachable")
}

// TestHelperProbe runs uvesafb's probe calls against a Helper with a
// FakeBIOS, checking what the driver checks.
func TestHelperProbe(t *testing.T) {
	f := newFakeUvesafb(t)
	bios := &FakeBIOS{LFB: 0xe0000000}
	h := &Helper{Handle: bios.Handle, SkipPrivilegeCheck: true}
	f.serve(h)

	in := make([]byte, InfoBlockLen)
	copy(in, "VBE2")
	rt, buf := f.exec(Task{Flags: FlagVBEIB, Regs: Regs{EAX: FuncGetInfo}}, in)
	if rt.Regs.EAX&0xffff != StatusOK || rt.Flags != FlagVBEIB || len(buf) != InfoBlockLen {
		t.Fatalf("0x4f00: eax %#x flags %v, %d bytes", rt.Regs.EAX, rt.Flags, len(buf))
	}
	ib, err := ParseInfoBlock(buf)
	if err != nil || string(ib.Signature[:]) != "VESA" || ib.Version < 0x200 || ib.TotalMemory != 256 {
		t.Fatalf("info block %+v %v", ib, err)
	}
	if s, ok := InfoString(buf, ib.OEMStringPtr); !ok || s != "connector v86d fake" {
		t.Errorf("OEM string %q %v", s, ok)
	}
	modes, ok := ModeList(buf, ib.ModeListPtr)
	if !ok || len(modes) != 3 || modes[0] != 0x111 {
		t.Fatalf("modes %#x terminated %v", modes, ok)
	}
	for _, m := range modes {
		rt, buf := f.exec(Task{Flags: FlagBufRet | FlagBufESDI, Regs: Regs{EAX: FuncGetModeInfo, ECX: uint32(m)}}, make([]byte, ModeInfoLen))
		mi, err := ParseModeInfo(buf)
		if rt.Regs.EAX&0xffff != StatusOK || err != nil {
			t.Fatalf("0x4f01 %#x: eax %#x %v", m, rt.Regs.EAX, err)
		}
		if mi.ModeAttr&ModeUsable != ModeUsable || mi.BitsPerPixel < 8 || mi.PhysBasePtr != 0xe0000000 || mi.XRes == 0 {
			t.Errorf("mode %#x: %+v", m, mi)
		}
	}
	// An unknown mode and an unsupported function fail, with the
	// registers otherwise unchanged.
	if rt, _ := f.exec(Task{Regs: Regs{EAX: FuncGetModeInfo, ECX: 0x1ff, EDI: 7}}, nil); rt.Regs.EAX != StatusFailed || rt.Regs.EDI != 7 {
		t.Errorf("unknown mode: %+v", rt.Regs)
	}
	if rt, _ := f.exec(Task{Regs: Regs{EAX: FuncDDC}}, nil); rt.Regs.EAX != StatusFailed {
		t.Errorf("DDC: eax %#x", rt.Regs.EAX)
	}
	if rt, _ := f.exec(Task{Regs: Regs{EAX: FuncState, ECX: 0xf}}, nil); rt.Regs.EAX != StatusOK || rt.Regs.EBX != 2 {
		t.Errorf("state size: %+v", rt.Regs)
	}
	if rt, _ := f.exec(Task{Regs: Regs{EAX: FuncSetMode, EBX: 0x4111}}, nil); rt.Regs.EAX != StatusOK || bios.Mode() != 0x4111 {
		t.Errorf("set mode: %+v, mode %#x", rt.Regs, bios.Mode())
	}
	if n := len(bios.Calls()); n != 8 {
		t.Errorf("%d calls recorded, want 8", n)
	}
	if st := h.Stats(); st.Tasks != 8 || st.Replies != 8 {
		t.Errorf("stats %+v", st)
	}
}

// TestHelperExit: a TF_EXIT task ends Serve with ErrExit and no reply.
func TestHelperExit(t *testing.T) {
	f := newFakeUvesafb(t)
	exited := false
	h := &Helper{Handle: (&FakeBIOS{}).Handle, SkipPrivilegeCheck: true, OnExit: func() { exited = true }}
	_, result := f.serveDone(h)
	f.send(Task{Flags: FlagExit}, nil)
	if err := <-result; !errors.Is(err, ErrExit) || !exited {
		t.Errorf("Serve: %v, OnExit called %v; want ErrExit", err, exited)
	}
	if len(f.replies) != 0 {
		t.Error("TF_EXIT was answered")
	}
}

// TestHelperMalformed: what cannot be parsed is counted and reported, not
// answered; serving goes on.
func TestHelperMalformed(t *testing.T) {
	f := newFakeUvesafb(t)
	var reported []error
	h := &Helper{Handle: (&FakeBIOS{}).Handle, SkipPrivilegeCheck: true, ErrorLog: func(err error) { reported = append(reported, err) }}
	stop := f.serve(h)
	bad, _ := AppendTask(nil, Task{}, make([]byte, 8))
	for _, p := range [][]byte{{1, 2, 3}, bad[:TaskLen+4]} {
		if _, err := f.k.Multicast(4, connector.Message{ID: connector.IDV86D, Seq: 1, Ack: 2, Data: p}); err != nil {
			t.Fatal(err)
		}
	}
	f.exec(Task{Regs: Regs{EAX: FuncPowerControl}}, nil)
	stop()
	if st := h.Stats(); st.Malformed != 2 || st.Replies != 1 || len(reported) != 2 {
		t.Errorf("stats %+v, %d reported", st, len(reported))
	}
}

func TestTaskCodec(t *testing.T) {
	in := Task{Flags: FlagBufRet | FlagBufESDI, Regs: Regs{EBX: 1, ECX: 2, EDX: 3, ESI: 4, EDI: 5, EBP: 6, EAX: 0x4f01, EIP: 8, EFLAGS: 9, ESP: 10, CS: 11, SS: 12, ES: 13, DS: 14, FS: 15, GS: 16}}
	b, err := AppendTask(nil, in, []byte("buffer"))
	if err != nil || len(b) != TaskLen+6 {
		t.Fatal(len(b), err)
	}
	out, buf, err := ParseTask(append(b, "trailing"...))
	in.BufLen = 6
	if err != nil || out != in || string(buf) != "buffer" {
		t.Errorf("%+v %q %v", out, buf, err)
	}
	if out.Flags.String() != "BUF_ESDI|BUF_RET" || Flags(0x30).String() != "EXIT|0x20" {
		t.Errorf("flags %v %v", out.Flags, Flags(0x30))
	}
	for _, p := range [][]byte{nil, b[:TaskLen-1], b[:TaskLen+5]} {
		if _, _, err := ParseTask(p); !errors.Is(err, ErrShort) {
			t.Errorf("%d bytes: %v", len(p), err)
		}
	}
	neg := bytes.Clone(b)
	neg[7] = 0x80 // buf_len negative
	if _, _, err := ParseTask(neg); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative buf_len: %v", err)
	}
	if _, err := AppendTask(nil, in, make([]byte, MaxBufLen+1)); !errors.Is(err, ErrInvalid) {
		t.Errorf("long buffer: %v", err)
	}
	// A mode list without a terminator is reported as such.
	if _, ok := ModeList([]byte{1, 1, 2, 2}, 0); ok {
		t.Error("unterminated mode list accepted")
	}
}

func FuzzParseTask(f *testing.F) {
	seed := func(t Task, buf []byte) { b, _ := AppendTask(nil, t, buf); f.Add(b) }
	vbe2 := make([]byte, InfoBlockLen)
	copy(vbe2, "VBE2")
	// Laid out from the header as uvesafb_exec sends them; see
	// testdata/kernel-tasks.txt for bytes captured from the kernels.
	seed(Task{Flags: FlagVBEIB, Regs: Regs{EAX: FuncGetInfo}}, vbe2)
	seed(Task{Flags: FlagBufRet | FlagBufESDI, Regs: Regs{EAX: FuncGetModeInfo, ECX: 0x111}}, make([]byte, ModeInfoLen))
	seed(Task{Regs: Regs{EAX: FuncSetMode, EBX: 0x4111}}, nil)
	seed(Task{Flags: FlagExit}, nil)
	reply := (&FakeBIOS{}).infoBlock()
	seed(Task{Flags: FlagVBEIB, Regs: Regs{EAX: StatusOK}}, reply)
	for _, b := range capturedTasks(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		tk, buf, err := ParseTask(p)
		if err != nil {
			if !errors.Is(err, ErrShort) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error matches no sentinel: %v", err)
			}
			return
		}
		if int(tk.BufLen) != len(buf) || tk.BufLen > MaxBufLen {
			t.Fatalf("buf_len %d, %d bytes", tk.BufLen, len(buf))
		}
		b, err := AppendTask(nil, tk, buf)
		if err != nil || !bytes.Equal(b[8:], p[8:TaskLen+len(buf)]) || b[0] != p[0] {
			t.Fatalf("round trip: %v", err)
		}
		if ib, err := ParseInfoBlock(buf); err == nil {
			_, _ = InfoString(buf, ib.OEMStringPtr)
			_, _ = ModeList(buf, ib.ModeListPtr)
		}
		_, _ = ParseModeInfo(buf)
	})
}

// TestNoAgent: on a kernel without uvesafb (a fake with no handler for
// 4:1) Serve fails at once with connector.ErrNoAgent and says which module
// to load, instead of waiting for tasks that never come; Check says the
// same. With the agent, Check passes.
func TestNoAgent(t *testing.T) {
	h := &Helper{SkipPrivilegeCheck: true}
	testutil.CheckAgentGateFake(t, connector.IDV86D, "uvesafb", h.Check, h.Serve)
}

// TestServeNilContext: Serve with a nil ctx returns an error that names it
// instead of panicking.
func TestServeNilContext(t *testing.T) {
	testutil.CheckServeNilContext(t, "v86d", (&Helper{SkipPrivilegeCheck: true}).Serve)
}

// TestCheckServeErrorTexts: Check's and Serve's errors have the one
// "v86d: op: detail" shape, with their own operation and no connector:
// prefix: no agent, a closed Conn.
func TestCheckServeErrorTexts(t *testing.T) {
	h := &Helper{SkipPrivilegeCheck: true}
	closed, err := newFakeUvesafb(t).k.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	testutil.CheckServeErrors(t, "v86d", 4, closed, h.Check, h.Serve)
}
