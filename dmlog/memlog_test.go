package dmlog

import (
	"errors"
	"testing"
)

func TestMemLogCore(t *testing.T) {
	l, err := NewCoreLog(8192+1, []string{"core", "1024"})
	if err != nil {
		t.Fatal(err)
	}
	if l.Regions() != 9 || l.RegionSize() != 1024 {
		t.Fatalf("%d regions of %d", l.Regions(), l.RegionSize())
	}
	for r := uint64(0); r < 9; r++ {
		if !l.IsClean(r) || l.InSync(r) {
			t.Fatalf("region %d: a new core log is clean and out of sync", r)
		}
	}
	if l.IsClean(9) || l.InSync(9) {
		t.Error("region 9 does not exist")
	}
	if err := l.Mark([]uint64{1, 9}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Mark out of range: %v", err)
	}
	if !l.IsClean(1) {
		t.Error("a refused Mark changed region 1")
	}
	// Resync hands out every region once, in order.
	var got []uint64
	for {
		r, ok := l.ResyncWork()
		if !ok {
			break
		}
		got = append(got, r)
		l.SetRegionSync(r, r != 4) // region 4 fails
	}
	if len(got) != 9 || l.SyncCount() != 8 || l.InSync(4) {
		t.Errorf("resynced %v, count %d", got, l.SyncCount())
	}
	// A region that goes out of sync again is found again.
	l.SetRegionSync(2, false)
	if l.SyncCount() != 7 {
		t.Errorf("count %d", l.SyncCount())
	}
	if r, ok := l.ResyncWork(); !ok || r != 2 {
		t.Errorf("resync work %d %v, want 2", r, ok)
	}
	if rec, hint := l.RemoteRecovering(0); rec || hint != 2 {
		t.Errorf("remote %v hint %d", rec, hint)
	}
	_ = l.Resume()
	if st := l.Stats(); st.Recovering != 0 {
		t.Errorf("recovering after resume: %+v", st)
	}
	if r, ok := l.ResyncWork(); !ok || r != 2 {
		t.Errorf("after resume: %d %v, want 2", r, ok)
	}

	n, err := NewCoreLog(4096, []string{"512", "nosync"})
	if err != nil || n.SyncCount() != 8 || n.Status(true) != "core 512 nosync" {
		t.Fatalf("nosync: %v %d %q", err, n.SyncCount(), n.Status(true))
	}
	if _, ok := n.ResyncWork(); ok {
		t.Error("nosync log has resync work")
	}
	if _, hint := n.RemoteRecovering(0); hint != 8 {
		t.Errorf("hint %d, want 8 (all in sync)", hint)
	}
	for _, args := range [][]string{nil, {"core"}, {"1000"}, {"x"}, {"1024", "maybe"}, {"1024", "sync", "x"}, {"16384"}} {
		if _, err := NewCoreLog(8192, args); !errors.Is(err, ErrInvalid) {
			t.Errorf("NewCoreLog(%q): %v", args, err)
		}
	}
	if _, err := NewMemLog(2, MaxMemLogRegions+1, false); !errors.Is(err, ErrInvalid) {
		t.Errorf("too many regions: %v", err)
	}
}

// TestNextBit compares nextSet and nextClear with a bit-by-bit search on
// patterns that cross word boundaries and leave bits set past n.
func TestNextBit(t *testing.T) {
	words := [][]uint64{
		{0, 0, 0},
		{^uint64(0), ^uint64(0), ^uint64(0)},
		{1 << 63, 0, 1},
		{0xfffffffffffffffe, ^uint64(0), 0x7fffffffffffffff},
		{0xaaaaaaaaaaaaaaaa, 0x5555555555555555, 0xf0f0f0f0f0f0f0f0},
	}
	for _, b := range words {
		for _, n := range []uint64{0, 1, 63, 64, 65, 127, 128, 150, 192} {
			for from := uint64(0); from <= n+1; from++ {
				for _, set := range []bool{true, false} {
					var want uint64
					found := false
					for r := from; r < n; r++ {
						if (b[r/64]>>(r%64)&1 == 1) == set {
							want, found = r, true
							break
						}
					}
					got, ok := nextClear(b, from, n)
					if set {
						got, ok = nextSet(b, from, n)
					}
					if ok != found || found && got != want {
						t.Fatalf("%x set %v from %d n %d: got %d %v, want %d %v", b, set, from, n, got, ok, want, found)
					}
				}
			}
		}
	}
}
