//go:build linux

package connector_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cnlink/connector"
)

// BenchmarkDispatch compares Mux.Serve with the loop it replaces: a Reader
// and a switch on the id ("Reader"). Both read the same queued messages from
// a real socket, on the benchmark's goroutine, in chunks of 1024 queued
// untimed; for Serve the handler of a chunk's last message queues the next.
//
//	go test -run '^$' -bench Dispatch -benchtime 200000x
func BenchmarkDispatch(b *testing.B) {
	requirePrivileged(b)
	for _, size := range benchSizes {
		id := testID()
		other := connector.CBID{Idx: id.Idx + 1, Val: id.Val}
		dgram := nlmsg(-1, cnmsg(id, 1, -1, payload(size, 0)))
		total := 0
		b.Run(fmt.Sprintf("payload=%dB/Reader", size), func(b *testing.B) {
			rx := dial(b, &connector.Config{ReadBufferSize: recvBufSize})
			r := rx.NewReader()
			defer r.Release()
			receiveLoop(b, rx.PortID(), dgram, func() {
				m, _, err := r.Next()
				if err != nil {
					b.Fatal(err)
				}
				switch m.ID {
				case id:
					total += len(m.Data)
				case other:
					total--
				default:
					b.Fatalf("unexpected id %v", m.ID)
				}
			})
		})
		b.Run(fmt.Sprintf("payload=%dB/Mux.Serve", size), func(b *testing.B) {
			rx := dial(b, &connector.Config{ReadBufferSize: recvBufSize})
			// Serve runs on the benchmark's goroutine, as the Reader loop
			// does. The handler of a chunk's last message queues the next
			// chunk, untimed, so there is no hand-off between goroutines
			// to measure.
			p := newBlockingPeer(b)
			b.SetBytes(int64(len(dgram)))
			b.ReportAllocs()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var cpu time.Duration
			var c0 time.Duration
			left, count, target := b.N, 0, 0
			refill := func() {
				b.StopTimer()
				if left == 0 {
					cancel()
					return
				}
				n := min(left, fillChunk)
				left -= n
				fill(b, p, rx.PortID(), dgram, n)
				target += n
				b.StartTimer()
				c0 = cpuTime(b)
			}
			mx := connector.NewMux()
			mx.HandleFunc(id, func(r connector.Request) {
				total += len(r.Msg.Data)
				if count++; count == target {
					cpu += cpuTime(b) - c0
					refill()
				}
			})
			mx.HandleFunc(other, func(connector.Request) { total-- })
			mx.NotFound(connector.HandlerFunc(func(r connector.Request) { b.Errorf("unexpected id %v", r.Msg.ID) }))
			b.ResetTimer()
			refill()
			if err := mx.Serve(ctx, rx, nil); !errors.Is(err, context.Canceled) || count != b.N {
				b.Fatalf("Serve: %v after %d of %d messages", err, count, b.N)
			}
			reportPerMsg(b, cpu)
		})
	}
}
