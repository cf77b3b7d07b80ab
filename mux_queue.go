package connector

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// ErrQueueFull matches the error a [Queue] reports when it drops a message
// because its handler is behind by the whole depth of the queue.
var ErrQueueFull = errors.New("handler queue full: message dropped")

// A Queue decouples a slow Handler from the Serve loop: ServeConnector
// copies the message into one of depth preallocated slots and returns at
// once, and the handler runs on the Queue's own goroutine, in arrival order.
// When all slots are taken the message is dropped and counted (Dropped),
// instead of stalling the reader: a stalled reader makes the kernel drop
// multicasts for the whole socket, and stalls w1's bus master thread.
//
// The handler's Request has the usual lifetime: Msg.Data is valid until it
// returns (the slot is then reused). Request.Reply works from the Queue's
// goroutine. A [Queue] recovers its handler's panics and counts them.
//
// Register a [Queue] as a route's handler, and Close it when the Mux no longer
// serves: Close lets the handler finish what is queued, then stops the
// goroutine. Copying into the slots allocates only while a slot grows to the
// largest message seen. A [Queue] is safe for concurrent use.
type Queue struct {
	h       Handler
	onError func(error)

	mu     sync.Mutex // serializes enqueueing against Close
	closed bool
	slots  []Request
	free   chan int
	work   chan int
	done   chan struct{}

	dropped, panics atomic.Uint64
}

// MaxQueueDepth is the largest depth NewQueue accepts: a million slots, tens
// of megabytes of Requests before any message is copied, far more than a
// handler should be allowed to fall behind.
const MaxQueueDepth = 1 << 20

// NewQueue starts a [Queue] of depth messages, 1 to [MaxQueueDepth], in
// front of h. A depth out of range fails with an error matching
// [ErrInvalidConfig], a nil h with an error too. onError, if not nil, is
// called with an error matching [ErrQueueFull] for every dropped message
// (on the goroutine that called ServeConnector) and with an error matching
// [ErrHandlerPanic] for every panic of h (on the Queue's goroutine).
func NewQueue(h Handler, depth int, onError func(error)) (*Queue, error) {
	if h == nil {
		return nil, &OpError{Op: "new queue", Err: errors.New("nil handler")}
	}
	if depth < 1 || depth > MaxQueueDepth {
		return nil, &OpError{Op: "new queue", Err: fmt.Errorf("%w: the depth is %d; it must be 1 to %d (MaxQueueDepth) messages", ErrInvalidConfig, depth, MaxQueueDepth)}
	}
	q := &Queue{
		h:       h,
		onError: onError,
		slots:   make([]Request, depth),
		free:    make(chan int, depth),
		work:    make(chan int, depth),
		done:    make(chan struct{}),
	}
	for i := range depth {
		q.free <- i
	}
	go q.run()
	return q, nil
}

// ServeConnector queues a copy of req for the handler, or drops it when the
// queue is full or closed.
func (q *Queue) ServeConnector(req Request) {
	q.mu.Lock()
	if !q.closed {
		select {
		case i := <-q.free:
			s := &q.slots[i]
			data := append(s.Msg.Data[:0], req.Msg.Data...)
			*s = req
			s.Msg.Data = data
			q.work <- i
			q.mu.Unlock()
			return
		default:
		}
	}
	closed := q.closed
	q.mu.Unlock()
	n := q.dropped.Add(1)
	if q.onError != nil {
		why := "its handler is behind by the whole queue"
		if closed {
			why = "the queue is closed"
		}
		q.onError(&OpError{Op: "queue", Err: fmt.Errorf("%w: %v from %v dropped because %s (%d dropped so far)", ErrQueueFull, req.Msg.ID, req.From, why, n)})
	}
}

func (q *Queue) run() {
	defer close(q.done)
	for i := range q.work {
		if pe := dispatch(q.h, q.slots[i]); pe != nil {
			q.panics.Add(1)
			if q.onError != nil {
				q.report(&OpError{Op: "queue", Err: pe})
			}
		}
		q.free <- i
	}
}

// report calls onError on the Queue's goroutine, where a panic would end
// the program: it is recovered and counted in Panics too.
func (q *Queue) report(err error) {
	defer func() {
		if v := recover(); v != nil {
			q.panics.Add(1)
		}
	}()
	q.onError(err)
}

// Dropped returns how many messages the [Queue] dropped.
func (q *Queue) Dropped() uint64 { return q.dropped.Load() }

// Panics returns how many panics the [Queue] recovered: of its handler, and
// of onError called on its goroutine.
func (q *Queue) Panics() uint64 { return q.panics.Load() }

// Close stops accepting messages (later ones are dropped and counted), waits
// until the handler has processed every queued one, and stops the Queue's
// goroutine. Closing twice does nothing.
func (q *Queue) Close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.work)
	}
	q.mu.Unlock()
	<-q.done
}
