package dmlog

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
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
	clean := func(r uint64) bool {
		t.Helper()
		v, err := l.IsClean(r)
		if err != nil {
			t.Fatalf("IsClean(%d): %v", r, err)
		}
		return v
	}
	inSync := func(r uint64) bool {
		t.Helper()
		v, err := l.InSync(r)
		if err != nil {
			t.Fatalf("InSync(%d): %v", r, err)
		}
		return v
	}
	for r := uint64(0); r < 9; r++ {
		if !clean(r) || inSync(r) {
			t.Fatalf("region %d: a new core log is clean and out of sync", r)
		}
	}
	if err := l.Mark([]uint64{1, 9}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Mark out of range: %v", err)
	}
	if !clean(1) {
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
		if err := l.SetRegionSync(r, r != 4); err != nil { // region 4 fails
			t.Fatal(err)
		}
	}
	if len(got) != 9 || l.SyncCount() != 8 || inSync(4) {
		t.Errorf("resynced %v, count %d", got, l.SyncCount())
	}
	// A region that goes out of sync again is found again.
	if err := l.SetRegionSync(2, false); err != nil {
		t.Fatal(err)
	}
	if l.SyncCount() != 7 {
		t.Errorf("count %d", l.SyncCount())
	}
	if r, ok := l.ResyncWork(); !ok || r != 2 {
		t.Errorf("resync work %d %v, want 2", r, ok)
	}
	if rec, hint, err := l.RemoteRecovering(0); rec || hint != 2 || err != nil {
		t.Errorf("remote %v hint %d, %v", rec, hint, err)
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
	if _, hint, _ := n.RemoteRecovering(0); hint != 8 {
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

// TestMemLogRegionRange: every method that takes a region refuses one out
// of range alike, with ErrInvalid naming it, and changes nothing; the
// Server answers each such request EINVAL.
func TestMemLogRegionRange(t *testing.T) {
	l, err := NewCoreLog(8192, []string{"core", "1024"}) // 8 regions
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []uint64{8, 999, 1 << 40, ^uint64(0)} {
		check := func(what string, err error) {
			t.Helper()
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), fmt.Sprintf("region %d of a 8-region log", r)) {
				t.Errorf("%s(%d): %v, want ErrInvalid naming the region and the log's 8", what, r, err)
			}
		}
		_, err := l.IsClean(r)
		check("IsClean", err)
		_, err = l.InSync(r)
		check("InSync", err)
		check("SetRegionSync", l.SetRegionSync(r, true))
		_, _, err = l.RemoteRecovering(r)
		check("RemoteRecovering", err)
		check("Mark", l.Mark([]uint64{r}))
		check("Clear", l.Clear([]uint64{r}))
	}
	if st := l.Stats(); l.SyncCount() != 0 || st.SetSyncs != 0 || st.Marks != 0 || st.Clears != 0 {
		t.Errorf("refused calls changed the log: sync count %d, %+v", l.SyncCount(), st)
	}
	// In range, each works: the last region.
	if c, err := l.IsClean(7); !c || err != nil {
		t.Errorf("IsClean(7): %v, %v", c, err)
	}
	if err := l.SetRegionSync(7, true); err != nil || l.SyncCount() != 1 {
		t.Errorf("SetRegionSync(7): %v, count %d", err, l.SyncCount())
	}

	// Through the Server: each request naming region 999 gets EINVAL.
	f := newFakeDM(t)
	s := &Server{SkipPrivilegeCheck: true, ErrorLog: func(error) {}}
	_, stop := f.serve(s)
	defer stop()
	f.ok(TypeCtr, []byte("8192 core 1024"))
	for _, c := range []struct {
		typ  RequestType
		data []byte
	}{
		{TypeIsClean, AppendUint64(nil, 999)},
		{TypeInSync, AppendUint64(nil, 999)},
		{TypeSetRegionSync, AppendRegionSync(nil, 999, true)},
		{TypeIsRemoteRecovering, AppendUint64(nil, 999)},
		{TypeMarkRegion, AppendUint64(nil, 999)},
		{TypeClearRegion, AppendUint64(nil, 999)},
	} {
		if r := f.call(c.typ, c.data); r.Errno() != syscall.EINVAL {
			t.Errorf("%v of region 999: %v, want EINVAL", c.typ, r.Errno())
		}
	}
}
