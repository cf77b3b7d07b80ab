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
