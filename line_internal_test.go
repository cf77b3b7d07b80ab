package connector

import (
	"sync"
	"testing"
)

// TestGoid: goid parses runtime.Stack's header (a change of its shape
// would turn the ErrCallInHandler check off without a trace): non-zero,
// the same on every call in one goroutine, and different in goroutines
// that run at the same time.
func TestGoid(t *testing.T) {
	self := goid()
	if self == 0 {
		t.Fatal(`goid() = 0: runtime.Stack's first line no longer reads "goroutine N [...]:"`)
	}
	if again := goid(); again != self {
		t.Fatalf("goid() = %d, then %d in the same goroutine", self, again)
	}
	const n = 50
	ids := make([]uint64, n)
	var started, release sync.WaitGroup
	started.Add(n)
	release.Add(1)
	var done sync.WaitGroup
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			ids[i] = goid()
			started.Done()
			release.Wait() // all alive at once: no id can be reused
		}()
	}
	started.Wait()
	release.Done()
	done.Wait()
	seen := map[uint64]bool{self: true}
	for i, id := range ids {
		if id == 0 || seen[id] {
			t.Fatalf("goroutine %d: goid() = %d (ids so far %v)", i, id, ids[:i])
		}
		seen[id] = true
	}
}
