package proc

import "testing"

func TestSeqTracker(t *testing.T) {
	var s seqTracker
	s.init()
	type step struct {
		cpu, seq uint32
		lost     uint32
		ooo      bool
	}
	for i, st := range []step{
		{0, 100, 0, false},
		{0, 101, 0, false},
		{0, 105, 3, false},
		{0, 105, 0, true}, // duplicate
		{0, 90, 0, true},  // older
		{0, 106, 0, false},
		{3000, 0xFFFFFFFF, 0, false}, // a CPU beyond the initial table
		{3000, 1, 1, false},          // wraps: 0 was lost
		{CPUUnknown, 5, 0, false},    // old kernels' acks: ignored
		{CPUUnknown, 9, 0, false},
	} {
		lost, ooo := s.observe(st.cpu, st.seq)
		if lost != st.lost || ooo != st.ooo {
			t.Errorf("step %d %+v: got lost %d, out of order %v", i, st, lost, ooo)
		}
	}
}

// pending reports at most what Event.Lost holds, and the rest on the next
// call, with and without exact counting; a later gap takes back first what
// pending reported (exact), so nothing is counted twice.
func TestPendingCap(t *testing.T) {
	for _, exact := range []bool{false, true} {
		var drops uint64 = 10
		lc := lossCounter{exact: exact, silent: true}
		lc.seqs.init()
		lc.setDrops(func() (uint64, error) { return drops, nil })
		drops += 1<<32 + 5
		if p := lc.pending(); p != 1<<32-1 {
			t.Errorf("exact %v: first pending %d, want %d", exact, p, uint64(1<<32-1))
		}
		if p := lc.pending(); p != 6 {
			t.Errorf("exact %v: second pending %d, want 6", exact, p)
		}
		if p := lc.pending(); p != 0 {
			t.Errorf("exact %v: third pending %d, want 0", exact, p)
		}
		if exact {
			lc.observe(0, 1)
			if lost, _ := lc.observe(0, 100); lost != 0 {
				t.Errorf("a gap of 98 after pending reported more: %d counted again", lost)
			}
		}
	}
}

// pending costs no read of the drop counter (a getsockopt per end of a
// wait) until a drop can be unreported: after an overrun, or always on a
// socket that drops without reporting overruns (NoENOBUFS).
func TestPendingReadsOnlyWhenDropsCanBeUnreported(t *testing.T) {
	for _, exact := range []bool{false, true} {
		for _, silent := range []bool{false, true} {
			var drops uint64 = 3
			reads := 0
			lc := lossCounter{exact: exact, silent: silent}
			lc.seqs.init()
			lc.setDrops(func() (uint64, error) { reads++; return drops, nil })
			reads = 0 // setDrops's baseline read
			drops += 4
			p := lc.pending()
			if silent {
				if reads != 1 || p != 4 {
					t.Errorf("exact %v, silent: pending %d after %d reads; want 4 after 1", exact, p, reads)
				}
				continue
			}
			if reads != 0 || p != 0 {
				t.Errorf("exact %v: pending %d after %d reads before any overrun; want 0 after 0", exact, p, reads)
			}
			lc.overrun()
			if p := lc.pending(); reads != 1 || p != 4 {
				t.Errorf("exact %v: pending %d after %d reads after an overrun; want 4 after 1", exact, p, reads)
			}
		}
	}
}
