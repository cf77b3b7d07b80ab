package proc

import (
	"context"
	"errors"
	"iter"
	"sync"

	"github.com/cnlink/connector"
)

// Events returns an iterator over the Listener's events, for use with
// range:
//
//	for ev, err := range l.Events(ctx) { ... }
//
// Each iteration yields either an event or an error, as [Listener.Next]
// would return them; the *Event is reused and valid until the next
// iteration. The iteration ends when the loop body breaks, when the
// Listener is closed (after yielding an error matching
// connector.ErrClosed), or when ctx is done (after yielding ctx.Err()); a
// cancelled ctx wakes a pending wait promptly through [Listener.Flush],
// without a deadline. After errors that leave the Listener usable (malformed messages, a Flush
// by someone else) the iteration continues if the body does.
//
// A nil ctx is the only error yielded, and nothing is read.
//
// The caller's deadline ([Listener.SetDeadline]) also applies and ends the
// iteration with an error matching os.ErrDeadlineExceeded.
func (l *Listener) Events(ctx context.Context) iter.Seq2[*Event, error] {
	return func(yield func(*Event, error) bool) {
		if ctx == nil {
			yield(nil, nilCtx("events"))
			return
		}
		// On cancellation, a Flush wakes a pending Next. The mutex orders
		// it against the loop: a Flush is sent only while Next runs, and
		// one that Next did not consume is recorded, so that the next
		// call does not report it.
		var (
			mu            sync.Mutex
			inNext, fired bool
			consumed      bool
		)
		stop := context.AfterFunc(ctx, func() {
			mu.Lock()
			defer mu.Unlock()
			if inNext && l.Flush() == nil {
				fired = true
			}
		})
		defer func() {
			stop()
			mu.Lock()
			defer mu.Unlock()
			if fired && !consumed {
				l.flushDebt = true
			}
		}()
		ev := new(Event)
		for {
			mu.Lock()
			if err := ctx.Err(); err != nil {
				mu.Unlock()
				yield(nil, err)
				return
			}
			inNext = true
			mu.Unlock()
			err := l.Next(ev)
			mu.Lock()
			inNext = false
			if fired && errors.Is(err, connector.ErrFlushed) {
				consumed = true
			}
			mu.Unlock()
			if err != nil {
				if ctx.Err() != nil {
					yield(nil, ctx.Err())
					return
				}
				if !yield(nil, err) || !recoverable(err) {
					return
				}
				continue
			}
			if !yield(ev, nil) {
				return
			}
		}
	}
}
