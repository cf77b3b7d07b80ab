package connector

import (
	"sync"
	"sync/atomic"
)

// A freeList hands out reusable objects for the per-call paths (send
// buffers, receive batches). One object waits in a slot, which a goroutine
// calling in a loop always hits; a sync.Pool backs it for concurrent
// callers. The slot keeps steady-state calls allocation-free even under the
// race detector, which makes sync.Pool drop objects at random.
type freeList[T any] struct {
	slot atomic.Pointer[T]
	pool sync.Pool
	new  func() *T
}

func (f *freeList[T]) get() *T {
	if p := f.slot.Swap(nil); p != nil {
		return p
	}
	if p, ok := f.pool.Get().(*T); ok {
		return p
	}
	return f.new()
}

func (f *freeList[T]) put(p *T) {
	if !f.slot.CompareAndSwap(nil, p) {
		f.pool.Put(p)
	}
}
