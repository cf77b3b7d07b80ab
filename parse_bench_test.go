package connector

import (
	"testing"

	"github.com/cnlink/connector/internal/transport"
)

// BenchmarkReaderParse measures the Reader's user-space cost per message
// without system calls: a batch of 16 kernel-shaped proc datagrams is
// parsed again and again through Reader.Next's walking and sender checks.
func BenchmarkReaderParse(b *testing.B) {
	const n = 16
	c := &Conn{cfg: Config{Senders: SendersKernelOnly}}
	batch := transport.NewBatch(n, 128)
	msg := Message{ID: IDProc, Seq: 7, Data: make([]byte, 40)}
	for i := range batch.Bufs {
		d, err := appendNetlink(batch.Bufs[i][:0], msg, 0)
		if err != nil {
			b.Fatal(err)
		}
		batch.Meta[i] = transport.Meta{N: len(d), Groups: 1}
	}
	r := &Reader{c: c, b: batch}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r.i == r.n && !r.d.more() {
			r.n, r.i = n, 0
		}
		m, _, err := r.Next()
		if err != nil || len(m.Data) != 40 {
			b.Fatal(m, err)
		}
	}
}
