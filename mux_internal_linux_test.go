//go:build linux

package connector

import (
	"syscall"
	"testing"
	"time"
)

// processCPU returns the user and system CPU time the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMuxDeliver measures what Serve adds to each message the Reader
// returns: the spoof check, the pending-call check, the route lookup and
// the handler call with panic recovery, without the socket. Compare it with
// BenchmarkReceive's Reader.Next, which is the rest of Serve's cost. Besides
// ns/op it reports cpu-ns/op, the process's CPU time per message, which a
// busy machine disturbs much less.
//
//	go test -run '^$' -bench MuxDeliver
func BenchmarkMuxDeliver(b *testing.B) {
	for _, routes := range []int{1, 8, 64} {
		b.Run(map[int]string{1: "routes=1", 8: "routes=8", 64: "routes=64"}[routes], func(b *testing.B) {
			mx := NewMux()
			n := 0
			for v := range routes {
				mx.HandleFunc(CBID{Idx: 0x4242, Val: uint32(v)}, func(r Request) { n += len(r.Msg.Data) })
			}
			mx.HandleIndex(0x4243, HandlerFunc(func(Request) { n-- }))
			l := &line{}
			c := &Conn{}
			m := Message{ID: CBID{Idx: 0x4242, Val: uint32(routes - 1)}, Seq: 1, Data: make([]byte, 40)}
			from := Sender{Port: 1234}
			b.ReportAllocs()
			c0 := processCPU(b)
			for b.Loop() {
				mx.deliver(l, c, m, from, true, nil)
			}
			b.ReportMetric(float64((processCPU(b)-c0).Nanoseconds())/float64(b.N), "cpu-ns/op")
			if n == 0 || mx.Stats().Dispatched == 0 {
				b.Fatal("nothing dispatched")
			}
		})
	}
}
