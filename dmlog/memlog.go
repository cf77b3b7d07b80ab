package dmlog

import (
	"fmt"
	"math/bits"
	"strconv"
	"sync"
)

// A Log is one mirror's dirty log: the userspace side of the kernel's
// struct dm_dirty_log_type (include/linux/dm-dirty-log.h). A Server owns
// one Log per mirror (uuid and luid) and calls it on its serving goroutine,
// one request at a time, so an implementation needs no locking of its own
// unless it is also used elsewhere.
//
// Every call must return quickly: the kernel waits 15 s for the reply, then
// resends the request, and the mirror's I/O waits meanwhile. Every call may
// be repeated (see the package documentation), so mutations must be
// idempotent. Regions are numbered from 0; a region is RegionSize sectors of
// 512 bytes.
type Log interface {
	// RegionSize returns the region size in 512-byte sectors.
	RegionSize() uint64
	// IsClean reports whether no write to region r is in flight or
	// unflushed (the region was not marked, or cleared since).
	//
	// Every method that takes a region fails for one out of range with
	// an error matching ErrInvalid (the Server answers EINVAL, which the
	// kernel takes as "not clean", "not in sync" or, for SET_REGION_SYNC,
	// ignores: dm-log-userspace-base.c); the kernel's own logs never see
	// one, as dm-region-hash numbers regions from the mirror's length.
	IsClean(r uint64) (bool, error)
	// InSync reports whether region r is the same on all legs.
	InSync(r uint64) (bool, error)
	// Mark records that writes to the regions start (dirty); Clear that
	// they completed (clean). Both take effect at the next Flush at the
	// latest.
	Mark(regions []uint64) error
	Clear(regions []uint64) error
	// Flush commits marks and clears. The kernel issues the writes that
	// needed the marks only after Flush returns without error.
	Flush() error
	// ResyncWork returns a region that is not in sync for the kernel to
	// copy, and ok false when there is none. Until SetRegionSync reports
	// on it, a repeated call must return the same region: the kernel
	// recovers one region at a time, so a second call before then is a
	// resend of the first.
	ResyncWork() (r uint64, ok bool)
	// SetRegionSync records the outcome of a region's recovery, or a write
	// that failed on a leg (inSync false).
	SetRegionSync(r uint64, inSync bool) error
	// SyncCount returns how many regions are in sync.
	SyncCount() uint64
	// Status returns the log's part of the mirror's status line: table
	// false for STATUS_INFO (dmsetup status), true for STATUS_TABLE.
	Status(table bool) string
	// Suspend is called twice when the mirror is suspended: pre true
	// before I/O stops, false after.
	Suspend(pre bool) error
	// Resume is called when the mirror resumes, also after the kernel
	// re-created the log on a restarted server.
	Resume() error
	// Close releases the log. It is called on DTR, and on the old
	// instance when the kernel constructs a log the Server already has.
	Close() error
}

// A RemoteRecoveringLog is a Log that answers IS_REMOTE_RECOVERING itself:
// whether another node of a cluster is recovering region r, and the first
// region the kernel should still ask about (in_sync_hint: it skips the
// request for lower regions). A Server answers for other Logs with
// "not recovering" and a hint of 0, which only costs the kernel a request
// per 250 ms.
type RemoteRecoveringLog interface {
	Log
	// RemoteRecovering fails, as Log's methods do, for a region out of
	// range.
	RemoteRecovering(r uint64) (recovering bool, inSyncHint uint64, err error)
}

// MaxMemLogRegions bounds the regions of a MemLog: its three bitmaps then
// take 24 MiB. A larger mirror needs a larger region size.
const MaxMemLogRegions = 1 << 26

// A MemLog is an in-memory dirty log with the semantics of the kernel's
// "core" log (drivers/md/dm-log.c): a clean bitmap (all clean at start), a
// sync bitmap (all out of sync at start, so the mirror resynchronises,
// unless constructed with nosync), a count of regions in sync and a resync
// cursor. It loses its state when the process exits, as the core log does
// at reboot; the kernel then resynchronises the whole mirror. Unlike the
// core log, SetRegionSync counts a region once however often it is
// repeated, and ResyncWork hands out a region under recovery again (see
// Log).
//
// A MemLog is safe for concurrent use.
type MemLog struct {
	mu         sync.Mutex
	regionSize uint64
	regions    uint64
	clean      []uint64
	insync     []uint64
	recovering []uint64
	syncCount  uint64
	search     uint64
	nosync     bool
	suspended  bool
	st         MemLogStats
}

// MemLogStats are a MemLog's counters and state.
type MemLogStats struct {
	Regions, RegionSize uint64
	// Dirty is the number of regions not clean, InSync those in sync,
	// Recovering those handed out by ResyncWork and not yet reported on.
	Dirty, InSync, Recovering uint64
	// Calls per kind of request.
	Marks, Clears, Flushes, SetSyncs uint64
	Suspended                        bool
}

// NewMemLog returns a log of regions regions of regionSize sectors each.
// With inSync true every region starts in sync (the table's "nosync": no
// initial resynchronisation). It fails for a region size that is not a power
// of two of at least 2 sectors, as the core log does, and for more than
// MaxMemLogRegions regions.
func NewMemLog(regionSize, regions uint64, inSync bool) (*MemLog, error) {
	if regionSize < 2 || regionSize&(regionSize-1) != 0 {
		return nil, fmt.Errorf("%w: region size %d sectors is not a power of two of at least 2", ErrInvalid, regionSize)
	}
	if regions > MaxMemLogRegions {
		return nil, fmt.Errorf("%w: %d regions, a MemLog holds at most %d: use a larger region size", ErrInvalid, regions, MaxMemLogRegions)
	}
	words := (regions + 63) / 64
	l := &MemLog{
		regionSize: regionSize,
		regions:    regions,
		clean:      make([]uint64, words),
		insync:     make([]uint64, words),
		recovering: make([]uint64, words),
		nosync:     inSync,
	}
	for r := uint64(0); r < regions; r++ {
		setBit(l.clean, r)
		if inSync {
			setBit(l.insync, r)
		}
	}
	if inSync {
		l.syncCount = regions
	}
	return l, nil
}

// NewCoreLog builds a MemLog from a constructor request: the mirror's length
// in sectors and the log arguments of its table line, those of the kernel's
// core log optionally preceded by the word "core":
//
//	[core] <region_size> [sync|nosync]
//
// The region count is the length divided by the region size, rounded up.
func NewCoreLog(sectors uint64, args []string) (*MemLog, error) {
	if len(args) > 0 && args[0] == "core" {
		args = args[1:]
	}
	if len(args) < 1 || len(args) > 2 {
		return nil, fmt.Errorf("%w: log arguments %q; want [core] <region_size> [sync|nosync]", ErrInvalid, args)
	}
	rs, err := strconv.ParseUint(args[0], 10, 32)
	if err != nil {
		return nil, fmt.Errorf("%w: region size %q is not a number of sectors", ErrInvalid, args[0])
	}
	inSync := false
	if len(args) == 2 {
		switch args[1] {
		case "sync":
		case "nosync":
			inSync = true
		default:
			return nil, fmt.Errorf("%w: %q; want sync or nosync", ErrInvalid, args[1])
		}
	}
	if rs > sectors && sectors > 0 {
		return nil, fmt.Errorf("%w: region size %d sectors is larger than the %d-sector mirror", ErrInvalid, rs, sectors)
	}
	var n uint64
	if rs > 0 {
		n = sectors / rs
		if sectors%rs != 0 {
			n++
		}
	}
	return NewMemLog(rs, n, inSync)
}

func setBit(b []uint64, r uint64)       { b[r/64] |= 1 << (r % 64) }
func clearBit(b []uint64, r uint64)     { b[r/64] &^= 1 << (r % 64) }
func testBit(b []uint64, r uint64) bool { return b[r/64]&(1<<(r%64)) != 0 }
func (l *MemLog) valid(r uint64) bool   { return r < l.regions }
func (l *MemLog) lock() func()          { l.mu.Lock(); return l.mu.Unlock }

// RegionSize returns the region size in 512-byte sectors.
func (l *MemLog) RegionSize() uint64 { return l.regionSize }

// Regions returns the number of regions.
func (l *MemLog) Regions() uint64 { return l.regions }

// rangeErr is the error for region r out of range, the same from every
// method.
func (l *MemLog) rangeErr(r uint64) error {
	return fmt.Errorf("%w: region %d of a %d-region log", ErrInvalid, r, l.regions)
}

// IsClean reports whether region r is clean. A region out of range fails
// with an error matching ErrInvalid, as in every method that takes one.
func (l *MemLog) IsClean(r uint64) (bool, error) {
	defer l.lock()()
	if !l.valid(r) {
		return false, l.rangeErr(r)
	}
	return testBit(l.clean, r), nil
}

// InSync reports whether region r is in sync; a region out of range fails
// with an error matching ErrInvalid.
func (l *MemLog) InSync(r uint64) (bool, error) {
	defer l.lock()()
	if !l.valid(r) {
		return false, l.rangeErr(r)
	}
	return testBit(l.insync, r), nil
}

// SyncCount returns the number of regions in sync.
func (l *MemLog) SyncCount() uint64 { defer l.lock()(); return l.syncCount }

// Suspend records the suspension (MemLogStats.Suspended); it cannot fail.
func (l *MemLog) Suspend(pre bool) error { defer l.lock()(); l.suspended = true; return nil }

// Close does nothing: the log is garbage collected.
func (l *MemLog) Close() error { return nil }

// outOfSync marks every region out of sync and not recovering.
func (l *MemLog) outOfSync() {
	defer l.lock()()
	clear(l.insync)
	clear(l.recovering)
	l.syncCount, l.search = 0, 0
}

// Mark marks the regions dirty. A region out of range fails the whole call
// with ErrInvalid and changes nothing.
func (l *MemLog) Mark(regions []uint64) error { return l.setClean(regions, false) }

// Clear marks the regions clean, with the same rule as Mark.
func (l *MemLog) Clear(regions []uint64) error { return l.setClean(regions, true) }

func (l *MemLog) setClean(regions []uint64, clean bool) error {
	defer l.lock()()
	for _, r := range regions {
		if !l.valid(r) {
			return l.rangeErr(r)
		}
	}
	for _, r := range regions {
		if clean {
			setBit(l.clean, r)
		} else {
			clearBit(l.clean, r)
		}
	}
	if clean {
		l.st.Clears++
	} else {
		l.st.Marks++
	}
	return nil
}

// Flush has nothing to commit in memory; it counts the call.
func (l *MemLog) Flush() error { defer l.lock()(); l.st.Flushes++; return nil }

// ResyncWork returns the lowest region under recovery if there is one (a
// repeated request), otherwise the next region out of sync after the
// previous one, as the core log searches.
func (l *MemLog) ResyncWork() (uint64, bool) {
	defer l.lock()()
	if r, ok := nextSet(l.recovering, 0, l.regions); ok {
		return r, true
	}
	r, ok := nextClear(l.insync, l.search, l.regions)
	if !ok {
		l.search = l.regions
		return 0, false
	}
	l.search = r + 1
	setBit(l.recovering, r)
	return r, true
}

// SetRegionSync ends a region's recovery and records whether it is in sync.
// A region out of range fails with an error matching ErrInvalid and
// changes nothing.
func (l *MemLog) SetRegionSync(r uint64, inSync bool) error {
	defer l.lock()()
	if !l.valid(r) {
		return l.rangeErr(r)
	}
	l.st.SetSyncs++
	clearBit(l.recovering, r)
	switch was := testBit(l.insync, r); {
	case inSync && !was:
		setBit(l.insync, r)
		l.syncCount++
	case !inSync && was:
		clearBit(l.insync, r)
		l.syncCount--
		if r < l.search {
			l.search = r
		}
	}
	return nil
}

// Resume forgets recoveries in progress: the kernel suspends a mirror only
// after its recoveries ended, so regions still marked recovering were lost
// with a reply. The resync search restarts at region 0.
func (l *MemLog) Resume() error {
	defer l.lock()()
	l.suspended = false
	clear(l.recovering)
	l.search = 0
	return nil
}

// RemoteRecovering reports no remote recovery (a MemLog is local) and the
// first region not in sync as the hint. A region out of range fails with
// an error matching ErrInvalid.
func (l *MemLog) RemoteRecovering(r uint64) (bool, uint64, error) {
	defer l.lock()()
	if !l.valid(r) {
		return false, 0, l.rangeErr(r)
	}
	if h, ok := nextClear(l.insync, 0, l.regions); ok {
		return false, h, nil
	}
	return false, l.regions, nil
}

// Status returns "1 memlog" for STATUS_INFO (one argument, the log's name,
// as the core log reports "1 core"), and the log arguments for
// STATUS_TABLE.
func (l *MemLog) Status(table bool) string {
	if !table {
		return "1 memlog"
	}
	s := "core " + strconv.FormatUint(l.regionSize, 10)
	if l.nosync {
		s += " nosync"
	}
	return s
}

// Stats returns the log's state and counters.
func (l *MemLog) Stats() MemLogStats {
	defer l.lock()()
	st := l.st
	st.Regions, st.RegionSize, st.Suspended = l.regions, l.regionSize, l.suspended
	st.Dirty = l.regions - popcount(l.clean)
	st.InSync = popcount(l.insync)
	st.Recovering = popcount(l.recovering)
	return st
}

func popcount(b []uint64) uint64 {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return uint64(n)
}

// nextClear returns the first clear bit in [from, n).
func nextClear(b []uint64, from, n uint64) (uint64, bool) { return nextBit(b, from, n, ^uint64(0)) }

// nextSet returns the first set bit in [from, n).
func nextSet(b []uint64, from, n uint64) (uint64, bool) { return nextBit(b, from, n, 0) }

// nextBit returns the first bit in [from, n) that is set in b XOR flip.
func nextBit(b []uint64, from, n, flip uint64) (uint64, bool) {
	for r := from; r < n; {
		w := (b[r/64] ^ flip) >> (r % 64)
		if w == 0 {
			r = (r/64 + 1) * 64
			continue
		}
		r += uint64(bits.TrailingZeros64(w))
		return r, r < n
	}
	return 0, false
}
