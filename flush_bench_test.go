package connector

import (
	"testing"

	"github.com/cnlink/connector/internal/transport"
)

// oneQueued is a transport with one datagram queued at every receive:
// each blocking Recv returns it at once. It isolates what a blocking
// receive costs the library itself (the Flush bookkeeping of fill, the
// batch and the parse) from the system call and the wake-up.
type oneQueued struct {
	transport.Transport // nil: any other method panics
	dgram               []byte
}

func (t *oneQueued) PortID() uint32 { return 1 }

func (t *oneQueued) Recv(b *transport.Batch, block bool) (int, error) {
	n := copy(b.Bufs[0], t.dgram)
	b.Meta[0] = transport.Meta{N: n, Groups: 1 << 2}
	return 1, nil
}

// BenchmarkBlockingWakeup is Reader.Next with a batch of one over a
// transport that always has one datagram ready: every Next is one blocking
// receive that returns one message, the path of a live reader woken for
// each event, without the system call. Run with -cpu 1,2.
func BenchmarkBlockingWakeup(b *testing.B) {
	m := Message{ID: CBID{Idx: 3, Val: 1}, Data: make([]byte, 40)}
	dgram, err := appendNetlink(nil, m, 0)
	if err != nil {
		b.Fatal(err)
	}
	c, err := newConn(&oneQueued{dgram: dgram}, &Config{BatchSize: 1, MessageBufferSize: 512})
	if err != nil {
		b.Fatal(err)
	}
	r := c.NewReader()
	defer r.Release()
	b.ReportAllocs()
	for b.Loop() {
		if m, _, err := r.Next(); err != nil || len(m.Data) != 40 {
			b.Fatalf("Next: %d bytes, %v", len(m.Data), err)
		}
	}
}
