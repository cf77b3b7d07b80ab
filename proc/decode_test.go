package proc

import (
	"encoding/hex"
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/cnlink/connector"
	"github.com/google/go-cmp/cmp"
)

// Payloads captured from Linux 6.18 (x86-64) by the integration tests (also
// in testdata/fuzz/FuzzDecode).
const (
	kernelAck      = "0000000000000000d1aeff90ad000000000000000000000000000000000000000000000000000000"
	kernelFork     = "0100000001000000700248a6fd0000001f0500001f05000026050000260500000000000000000000"
	kernelExec     = "0200000001000000f6e14aa6fd000000260500002605000000000000000000000000000000000000"
	kernelUID      = "0400000001000000016c1ea7fd000000300500002c050000e1100000e11000000000000000000000"
	kernelGID      = "400000000100000003e51ba7fd000000300500002c05000029090000290900000000000000000000"
	kernelSID      = "80000000010000009f1e74a7fd000000310500003105000000000000000000000000000000000000"
	kernelPtrace   = "0001000001000000b01788a7fd00000036050000360500001f0500001f0500000000000000000000"
	kernelComm     = "00020000010000006444e6a7fd0000003705000037050000636e70726f632d636f6d6d0000000000"
	kernelCoredump = "0000004000000000d44126aafd0000003c0500003c050000210500001f0500000000000000000000"
	kernelExit     = "000000800100000075eda6a6fd000000260500002605000000030000110000001f0500001f050000"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func procMsg(seq uint32, data []byte) connector.Message {
	return connector.Message{ID: connector.IDProc, Seq: seq, Data: data}
}

func comm(s string) (c [16]byte) {
	copy(c[:], s)
	return c
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		cut  int // if not 0, decode only the first cut bytes
		want Event
	}{
		{"ack", kernelAck, 0, Event{Kind: KindNone, Timestamp: 0xad90ffaed1, Seq: 9}},
		{"fork", kernelFork, 0, Event{Kind: KindFork, CPU: 1, Timestamp: 0xfda6480270, Seq: 9,
			PID: 0x526, TGID: 0x526, ParentPID: 0x51f, ParentTGID: 0x51f}},
		{"exec", kernelExec, 0, Event{Kind: KindExec, CPU: 1, Timestamp: 0xfda64ae1f6, Seq: 9, PID: 0x526, TGID: 0x526}},
		{"uid", kernelUID, 0, Event{Kind: KindUID, CPU: 1, Timestamp: 0xfda71e6c01, Seq: 9, PID: 0x530, TGID: 0x52c,
			RUID: helperUIDValue, EUID: helperUIDValue}},
		{"gid", kernelGID, 0, Event{Kind: KindGID, CPU: 1, Timestamp: 0xfda71be503, Seq: 9, PID: 0x530, TGID: 0x52c,
			RGID: helperGIDValue, EGID: helperGIDValue}},
		{"sid", kernelSID, 0, Event{Kind: KindSID, CPU: 1, Timestamp: 0xfda7741e9f, Seq: 9, PID: 0x531, TGID: 0x531}},
		{"ptrace", kernelPtrace, 0, Event{Kind: KindPtrace, CPU: 1, Timestamp: 0xfda78817b0, Seq: 9, PID: 0x536, TGID: 0x536,
			TracerPID: 0x51f, TracerTGID: 0x51f}},
		{"comm", kernelComm, 0, Event{Kind: KindComm, CPU: 1, Timestamp: 0xfda7e64464, Seq: 9, PID: 0x537, TGID: 0x537,
			Comm: comm("cnproc-comm")}},
		{"coredump", kernelCoredump, 0, Event{Kind: KindCoredump, Timestamp: 0xfdaa2641d4, Seq: 9, PID: 0x53c, TGID: 0x53c,
			ParentPID: 0x521, ParentTGID: 0x51f}},
		{"exit", kernelExit, 0, Event{Kind: KindExit, CPU: 1, Timestamp: 0xfda6a6ed75, Seq: 9, PID: 0x526, TGID: 0x526,
			ExitCode: 0x300, ExitSignal: 17, ParentPID: 0x51f, ParentTGID: 0x51f}},
		// Layouts of older kernels: exit and coredump before 4.18 have no
		// parent fields; every kind before 3.2 had a 32-byte proc_event.
		{"exit before 4.18", kernelExit, 32, Event{Kind: KindExit, CPU: 1, Timestamp: 0xfda6a6ed75, Seq: 9, PID: 0x526, TGID: 0x526,
			ExitCode: 0x300, ExitSignal: 17}},
		{"coredump before 4.18", kernelCoredump, 24, Event{Kind: KindCoredump, Timestamp: 0xfdaa2641d4, Seq: 9, PID: 0x53c, TGID: 0x53c}},
		{"fork before 3.2", kernelFork, 32, Event{Kind: KindFork, CPU: 1, Timestamp: 0xfda6480270, Seq: 9,
			PID: 0x526, TGID: 0x526, ParentPID: 0x51f, ParentTGID: 0x51f}},
		{"exec minimal", kernelExec, 24, Event{Kind: KindExec, CPU: 1, Timestamp: 0xfda64ae1f6, Seq: 9, PID: 0x526, TGID: 0x526}},
		{"ack minimal", kernelAck, 20, Event{Kind: KindNone, Timestamp: 0xad90ffaed1, Seq: 9}},
		{"trailing bytes", kernelExec + "ffffffffffffffff", 0, Event{Kind: KindExec, CPU: 1, Timestamp: 0xfda64ae1f6, Seq: 9, PID: 0x526, TGID: 0x526}},
		{"full comm", "0002000001000000" + "0100000000000000" + "0700000007000000" + hex.EncodeToString([]byte("0123456789abcdef")), 0,
			Event{Kind: KindComm, CPU: 1, Timestamp: 1, Seq: 9, PID: 7, TGID: 7, Comm: comm("0123456789abcdef")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := unhex(t, tc.data)
			if tc.cut != 0 {
				b = b[:tc.cut]
			}
			var got Event
			if err := Decode(procMsg(9, b), &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Decode (-want +got):\n%s", diff)
			}
		})
	}
}

// The values the "setid" helper sets (0x10e1 and 0x929).
const (
	helperUIDValue = 4321
	helperGIDValue = 2345
)

func TestDecodeUnknown(t *testing.T) {
	b := unhex(t, "00040000030000000100000000000000aabbccdd")
	var ev Event
	if err := Decode(procMsg(1, b), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Kind != 0x400 || ev.CPU != 3 || ev.Timestamp != 1 || string(ev.Raw) != string(b) {
		t.Errorf("Decode = %+v", ev)
	}
	if &ev.Raw[0] != &b[0] {
		t.Error("Raw does not alias the message")
	}
	// The filter bit is not an event kind either.
	b = unhex(t, "0000002000000000"+"0100000000000000")
	if err := Decode(procMsg(1, b), &ev); err != nil || ev.Kind != KindNonzeroExit || ev.Raw == nil {
		t.Errorf("Decode(nonzero-exit) = %+v, %v", ev, err)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    connector.Message
		kind Kind
		want string
	}{
		{"empty", procMsg(1, nil), 0, "0 bytes are too short for the 16-byte proc_event header"},
		{"short header", procMsg(1, make([]byte, 15)), 0, "15 bytes are too short"},
		{"short exec", procMsg(1, unhex(t, kernelExec)[:23]), KindExec, "exec event of 23 bytes is shorter than the 24 bytes it needs"},
		{"short fork", procMsg(1, unhex(t, kernelFork)[:31]), KindFork, "fork event of 31 bytes"},
		{"short exit", procMsg(1, unhex(t, kernelExit)[:31]), KindExit, "exit event of 31 bytes"},
		{"short comm", procMsg(1, unhex(t, kernelComm)[:39]), KindComm, "comm event of 39 bytes"},
		{"short ack", procMsg(1, unhex(t, kernelAck)[:19]), KindNone, "none event of 19 bytes"},
		{"wrong id", connector.Message{ID: connector.IDW1, Data: unhex(t, kernelExec)}, 0, "message id w1 is not the process events connector"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ev Event
			err := Decode(tc.m, &ev)
			var de *DecodeError
			if !errors.As(err, &de) || !errors.Is(err, connector.ErrMalformed) {
				t.Fatalf("Decode: %v, want a *DecodeError matching ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if de.Kind != tc.kind || ev.Kind != tc.kind {
				t.Errorf("error kind %v, event kind %v, want %v", de.Kind, ev.Kind, tc.kind)
			}
		})
	}
}

func TestDecodeAllocs(t *testing.T) {
	m := procMsg(1, unhex(t, kernelExit))
	var ev Event
	if a := testing.AllocsPerRun(100, func() { _ = Decode(m, &ev) }); a != 0 {
		t.Errorf("Decode allocates %v times, want 0", a)
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{
		KindNone:                  "none",
		KindFork:                  "fork",
		KindExit:                  "exit",
		KindNonzeroExit:           "nonzero-exit",
		KindLost:                  "lost",
		KindAll:                   "all",
		KindFork | KindExec:       "fork|exec",
		KindCoredump | KindPtrace: "ptrace|coredump",
		// Unknown bits: written whole, never split into names (an
		// event's what is one value; a value with bits this package does
		// not know may be a newer kernel's kind, or no kind at all).
		KindExit | 0x400: "Kind(0x80000400)",
		0x400:            "Kind(0x400)",
		0x12345:          "Kind(0x12345)",
	} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%#x).String() = %q, want %q", uint32(k), got, want)
		}
	}
	if KindAll != 0xE00003C7 {
		t.Errorf("KindAll = %#x, want PROC_EVENT_ALL 0xe00003c7", uint32(KindAll))
	}
	if KindAll&KindLost != 0 {
		t.Error("KindLost overlaps a kernel kind")
	}
	for _, k := range []Kind{KindNone, KindFork, KindExit, KindLost} {
		if !k.Known() {
			t.Errorf("%v not Known", k)
		}
	}
	if KindNonzeroExit.Known() || Kind(0x400).Known() || (KindFork | KindExec).Known() {
		t.Error("Known accepts a non-kind")
	}
}

func TestEventHelpers(t *testing.T) {
	ev := Event{Kind: KindExit, PID: 10, TGID: 9, ExitCode: 0x86, ExitSignal: -1}
	if !ev.IsThread() || ev.IsProcess() {
		t.Error("thread not recognised")
	}
	ws := ev.WaitStatus()
	if !ws.Signaled() || ws.Signal() != 6 || !ws.CoreDump() || ws.Exited() {
		t.Errorf("WaitStatus of 0x86: signaled %v signal %v core %v", ws.Signaled(), ws.Signal(), ws.CoreDump())
	}
	ev.ExitCode = 0x300
	if ws := ev.WaitStatus(); !ws.Exited() || ws.ExitStatus() != 3 {
		t.Errorf("WaitStatus of 0x300: exited %v status %d", ws.Exited(), ws.ExitStatus())
	}
	for _, k := range []Kind{KindFork, KindExec, KindUID, KindComm, KindCoredump, KindLost, KindNone} {
		// The ExitCode field is 0 there: it must not read as exit status 0.
		e := Event{Kind: k}
		if ws := e.WaitStatus(); ws != NoWaitStatus || ws.Exited() || ws.Signaled() || ws.ExitStatus() != -1 || ws.Signal() != 0 || ws.String() != "no wait status (not an exit event)" {
			t.Errorf("WaitStatus of a %v event: %#x %q (exited %v, signaled %v); want NoWaitStatus, neither", k, uint32(ws), ws, ws.Exited(), ws.Signaled())
		}
	}
	if ws := (&Event{Kind: KindExit}).WaitStatus(); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("WaitStatus of exit(0): %q; want exit status 0", ws)
	}
	ev.Comm = comm("abc")
	if ev.CommString() != "abc" {
		t.Errorf("CommString = %q", ev.CommString())
	}
	for _, e := range []Event{
		{Kind: KindNone, Ack: 5}, {Kind: KindFork}, {Kind: KindExec}, {Kind: KindUID}, {Kind: KindGID}, {Kind: KindSID},
		{Kind: KindPtrace}, {Kind: KindComm}, {Kind: KindCoredump}, {Kind: KindExit}, {Kind: KindLost, CPU: CPUUnknown},
		{Kind: KindLost, Lost: 3}, {Kind: 0x400, Raw: []byte{1}},
	} {
		if s := e.String(); !strings.HasPrefix(s, e.Kind.String()+" cpu=") {
			t.Errorf("String() = %q", s)
		}
	}
}

// WaitStatus.String reads as os.ProcessState.String (the contract): the
// words are the kernel's status layout (include/uapi/linux/wait.h).
func TestWaitStatusString(t *testing.T) {
	for w, want := range map[WaitStatus]string{
		0:                "exit status 0",
		3 << 8:           "exit status 3",
		255 << 8:         "exit status 255",
		WaitStatus(9):    "signal: " + syscall.Signal(9).String(),
		WaitStatus(0x86): "signal: " + syscall.Signal(6).String() + " (core dumped)",
		0x137f:           "wait status 0x137f", // stopped by signal 19: no exit event carries it
		0xffff:           "wait status 0xffff", // continued
	} {
		if got := w.String(); got != want {
			t.Errorf("WaitStatus(%#x).String() = %q, want %q", uint32(w), got, want)
		}
	}
}
