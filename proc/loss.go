package proc

import "runtime"

// maxTrackedCPU bounds the CPU numbers whose sequences are tracked. Larger
// values are not real CPUs: acknowledgements from kernels around 3.10 carry
// CPU -1.
const maxTrackedCPU = 1 << 16

// seqTracker follows the per-CPU cn_msg sequence numbers of an unfiltered
// subscription. The kernel numbers each CPU's messages (events and
// acknowledgements alike) consecutively, modulo 2^32, and an unfiltered
// socket receives all of them, so a jump of n > 1 means n-1 lost messages.
type seqTracker struct {
	cpus []seqSlot
}

type seqSlot struct {
	last uint32
	seen bool
}

func (t *seqTracker) init() {
	t.cpus = make([]seqSlot, max(256, runtime.NumCPU()))
}

// observe records seq from cpu and returns how many messages were skipped
// since the previous one from that CPU, and whether seq was not after it
// (a duplicate or reordering, which leaves the baseline alone). The first
// message from a CPU only sets the baseline.
func (t *seqTracker) observe(cpu, seq uint32) (lost uint32, outOfOrder bool) {
	if cpu >= maxTrackedCPU {
		return 0, false
	}
	if int(cpu) >= len(t.cpus) {
		n := make([]seqSlot, max(int(cpu)+1, 2*len(t.cpus)))
		copy(n, t.cpus)
		t.cpus = n
	}
	s := &t.cpus[cpu]
	if !s.seen {
		s.last, s.seen = seq, true
		return 0, false
	}
	d := seq - s.last // modulo 2^32: wraps correctly
	if d == 0 || d >= 1<<31 {
		return 0, true
	}
	s.last = seq
	return d - 1, false
}
