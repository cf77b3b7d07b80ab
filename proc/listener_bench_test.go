package proc_test

import (
	"testing"
	"time"

	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/proc"
	"github.com/cnlink/connector/proc/proctest"
)

// BenchmarkListenerNext measures the whole receive path (batched receive,
// sender and id checks, sequence tracking, decoding, filtering) over the fake
// kernel, which copies datagrams as recvmmsg would. Emitting the events is
// not timed.
func BenchmarkListenerNext(b *testing.B) {
	for _, bc := range []struct {
		name  string
		kinds proc.Kind
	}{{"all", 0}, {"user filter", proc.KindExit}} {
		b.Run(bc.name, func(b *testing.B) {
			const ring = 4096
			k := cntest.New(&cntest.Options{QueueLen: ring})
			f := &fixture{k: k, a: proctest.New(k, &proctest.Options{Legacy: true})}
			c := f.dial(b, proc.DefaultListenBatchSize)
			l, err := f.listenOn(b, c, &proc.Config{Kinds: bc.kinds, AckTimeout: time.Millisecond})
			if err != nil {
				b.Fatal(err)
			}
			ev := proc.Event{Kind: proc.KindExit, PID: 7, TGID: 7, ExitSignal: 17}
			var got proc.Event
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				if n%ring == 0 {
					b.StopTimer()
					for range ring {
						f.a.Emit(ev)
					}
					b.StartTimer()
				}
				if err := l.Next(&got); err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
