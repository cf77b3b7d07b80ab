package proc

import (
	"runtime"

	"github.com/cnlink/connector"
)

// maxTrackedCPU bounds the CPU numbers whose sequences are tracked. Larger
// values are not real CPUs: acknowledgements from kernels around 3.10 carry
// CPU -1.
const maxTrackedCPU = 1 << 16

// A lossCounter turns the per-CPU sequence numbers into counts of lost
// events. The kernel numbers each CPU's messages (events and
// acknowledgements alike, for every listener) consecutively, modulo 2^32.
//
// When the socket receives every message (exact), a jump of n > 1 means n-1
// lost messages. When a filter keeps messages out (the kernel's, or the
// socket filter that drops other processes' acknowledgements), a gap also
// holds what was filtered: the count then comes from the socket's own drop
// counter, and a gap only says when to read it. Each gap takes at most its
// size from the drops not yet reported, so the reported total never exceeds
// what the kernel dropped, and reaches it as soon as every CPU that lost an
// event has sent another one; which CPU a drop is reported on can be wrong
// when another message made a gap first.
//
// With the kernel filtering by kind, gaps are the normal case, so the
// counter is read on gaps only after an overrun (suspect), until a read
// shows no new drop: the socket drops silently while it stays congested
// after the overrun it reported.
//
// A drop is counted at a gap only once its CPU sends again, so pending,
// called when a wait ends, reports the drops the counter shows and no gap
// has yet: without exact, the drops read and not yet taken by a gap; with
// exact, what the counter shows beyond everything reported, which later
// gaps then take back first (credit), so that nothing is counted twice.
// Drops of a CPU before its first message received never show as a gap:
// their credit is taken back by gaps that do not hold them, and those
// gaps' other losses (the kernel's own) go uncounted. Telling them apart
// would need to know, when pending reads the counter, which messages sent
// before it are still unread (a deadline ends a wait without a receive).
//
// pending reads the counter (a getsockopt) only once a drop can be
// unreported: after an overrun (suspect, cleared only as observe clears
// it), or always when the socket drops without reporting overruns (silent:
// NoENOBUFS). With overruns reported, the first drop into a socket sets the
// socket error that a receive returns before any datagram, so until the
// Listener has seen an overrun no drop is unreported, and a wait that ends
// then costs no system call (procmon ends every wake-up with a Flush).
type lossCounter struct {
	seqs  seqTracker
	exact bool
	// drops reads the socket's drop counter; nil when the Conn has none.
	drops func() (uint64, error)
	// always reads it on every gap; otherwise only while suspect.
	always, suspect bool
	// silent: the socket drops without reporting overruns (NoENOBUFS), so
	// pending reads the counter at every end of a wait.
	silent      bool
	seen, avail uint64
	// With exact: base is the counter's baseline, gaps the sum of the
	// gaps seen, credit what pending reported that no gap has taken back.
	base, gaps, credit uint64
}

func (lc *lossCounter) init(c *connector.Conn, mode Mode, exact, silent bool) {
	lc.seqs.init()
	lc.exact, lc.silent = exact, silent
	lc.always = mode != ModeKernelFilter
	lc.setDrops(c.Drops) // left nil where the Conn has no drop counter
}

// setDrops sets the drop counter and its baseline.
func (lc *lossCounter) setDrops(f func() (uint64, error)) {
	lc.drops, lc.seen, lc.avail, lc.base, lc.gaps, lc.credit = nil, 0, 0, 0, 0, 0
	if n, err := f(); err == nil {
		lc.drops, lc.seen, lc.base = f, n, n
	}
}

// pending returns the drops the socket's counter shows that no count has
// reported yet, at most 2^32-1 (what Event.Lost holds; the rest waits for
// the next call), and takes them as reported.
func (lc *lossCounter) pending() uint64 {
	if lc.drops == nil || !(lc.suspect || lc.silent) {
		return 0
	}
	n, err := lc.drops()
	if err != nil {
		return 0
	}
	if lc.exact {
		reported := lc.gaps + lc.credit
		if n-lc.base <= reported {
			return 0
		}
		p := min(n-lc.base-reported, 1<<32-1)
		lc.credit += p
		return p
	}
	if n > lc.seen {
		lc.avail += n - lc.seen
		lc.seen = n
	}
	p := min(lc.avail, 1<<32-1)
	lc.avail -= p
	return p
}

// overrun notes that the kernel reported an overrun.
func (lc *lossCounter) overrun() { lc.suspect = true }

// observe records seq from cpu and returns how many events were lost
// before it, and whether seq was not after the previous one from that CPU.
func (lc *lossCounter) observe(cpu, seq uint32) (lost uint32, outOfOrder bool) {
	gap, ooo := lc.seqs.observe(cpu, seq)
	if gap == 0 {
		return 0, ooo
	}
	if lc.exact {
		lc.gaps += uint64(gap)
		take := uint32(min(uint64(gap), lc.credit))
		lc.credit -= uint64(take)
		return gap - take, ooo
	}
	if lc.drops == nil || !(lc.always || lc.suspect) {
		return 0, ooo
	}
	if n, err := lc.drops(); err == nil {
		if n > lc.seen {
			lc.avail += n - lc.seen
			lc.seen = n
		} else if lc.avail == 0 {
			lc.suspect = false // no new drop: the congestion is over
		}
	}
	l := min(uint64(gap), lc.avail)
	lc.avail -= l
	return uint32(l), ooo
}

// seqTracker follows the per-CPU cn_msg sequence numbers.
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
func (t *seqTracker) observe(cpu, seq uint32) (skipped uint32, outOfOrder bool) {
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
