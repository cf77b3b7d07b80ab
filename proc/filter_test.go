package proc

import (
	"encoding/binary"
	"testing"

	"github.com/cnlink/connector"
)

// The user-space filter, for every selection of the kernel's kind bits
// (with and without bits that are not kernel kinds) against every kind of
// message: single known kinds, exits with and without a status, and kinds
// that are not one known kind (a newer kernel's, several bits, the filter
// bit itself). The expected value is the documented contract (Config.Kinds):
// everything when every kind (or none) is selected; otherwise a single known
// kind that is selected, or a nonzero exit when KindNonzeroExit is.
func TestUserFilterTable(t *testing.T) {
	kernelKinds := []Kind{KindFork, KindExec, KindUID, KindGID, KindSID, KindPtrace, KindComm, KindNonzeroExit, KindCoredump, KindExit}
	type msg struct {
		what Kind
		code uint32
	}
	msgs := []msg{
		{KindFork, 0}, {KindExec, 0}, {KindUID, 0}, {KindGID, 0}, {KindSID, 0}, {KindPtrace, 0},
		{KindComm, 0}, {KindCoredump, 0}, {KindExit, 0}, {KindExit, 0x300}, {KindExit, 9},
		{KindFork | KindExec, 0}, {0x400, 0}, {0x400 | KindExec, 0}, {KindNonzeroExit, 0},
		{KindNonzeroExit, 1}, {KindExit | KindFork, 1}, {0x08, 0}, {0x10000000, 0},
	}
	single := map[Kind]bool{}
	for _, k := range kernelKinds {
		if k != KindNonzeroExit {
			single[k] = true
		}
	}
	checked := 0
	for mask := 0; mask < 1<<len(kernelKinds); mask++ {
		var sel Kind
		for i, k := range kernelKinds {
			if mask&(1<<i) != 0 {
				sel |= k
			}
		}
		for _, extra := range []Kind{0, 0x400, KindLost, 0x400 | KindLost | 0x08} {
			l := &Listener{}
			l.kinds, l.all = userFilter(sel | extra)
			every := sel == 0 || sel == KindAll
			if l.all != every {
				t.Fatalf("selection %v: all = %v, want %v", sel|extra, l.all, every)
			}
			for _, m := range msgs {
				p := make([]byte, eventLen)
				binary.NativeEndian.PutUint32(p[offWhat:], uint32(m.what))
				binary.NativeEndian.PutUint32(p[offData+8:], m.code)
				var ev Event
				if err := Decode(connector.Message{ID: connector.IDProc, Data: p}, &ev); err != nil {
					t.Fatal(err)
				}
				want := every || single[m.what] && (sel&m.what != 0 || m.what == KindExit && m.code != 0 && sel&KindNonzeroExit != 0)
				if got := l.match(&ev); got != want {
					t.Errorf("selection %v, message kind %v code %#x: delivered %v, want %v", sel|extra, m.what, m.code, got, want)
				}
				checked++
			}
		}
	}
	t.Logf("%d combinations checked", checked)
}
