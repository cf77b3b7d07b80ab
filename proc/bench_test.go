package proc

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/cnlink/connector"
)

// BenchmarkDecode measures decoding one exit event captured from the kernel.
func BenchmarkDecode(b *testing.B) {
	m := procMsg(1, unhex(b, kernelExit))
	var ev Event
	b.ReportAllocs()
	for b.Loop() {
		if err := Decode(m, &ev); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkListenerNext measures the whole receive path (batched receive,
// sender and id checks, sequence tracking, decoding, filtering) over the fake
// kernel, which copies datagrams as recvmmsg would.
func BenchmarkListenerNext(b *testing.B) {
	for _, bc := range []struct {
		name  string
		kinds Kind
	}{{"all", 0}, {"user filter", KindExit}} {
		b.Run(bc.name, func(b *testing.B) {
			k := newFakeKernel()
			k.procInput = false
			c := k.conn(b, DefaultBatchSize)
			l, err := listenConn(c, &Config{Kinds: bc.kinds, AckTimeout: time.Millisecond})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			// Pre-build a ring of datagrams; refill between timed runs.
			const ring = 4096
			dgrams := make([]fakeDgram, ring)
			for i := range dgrams {
				dgrams[i] = fakeDgram{b: kernelDatagram(connector.IDProc, uint32(i+1), 0, payload(KindExit, 0, 1, 7, 7, 0, 17))}
			}
			var ev Event
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				if n%ring == 0 {
					b.StopTimer()
					k.mu.Lock()
					for i := range dgrams {
						// Keep the per-CPU sequence consecutive across refills.
						seq := uint32(n + i + 1)
						d := dgrams[i].b
						putSeq(d, seq)
					}
					k.queue = append(k.queue[:0], dgrams...)
					k.mu.Unlock()
					b.StartTimer()
				}
				if err := l.Next(&ev); err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// putSeq rewrites the sequence number of a kernel datagram: nlmsg_seq and
// cn_msg.seq.
func putSeq(d []byte, seq uint32) {
	binary.NativeEndian.PutUint32(d[8:], seq)
	binary.NativeEndian.PutUint32(d[24:], seq)
}
