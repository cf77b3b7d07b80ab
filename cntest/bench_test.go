package cntest_test

import (
	"testing"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
)

// BenchmarkMulticastNext measures a kernel multicast through the fake and
// its receipt with Reader.Next: the cost a unit test pays per message.
func BenchmarkMulticastNext(b *testing.B) {
	k := cntest.New(nil)
	c, err := k.Dial(&connector.Config{Groups: []connector.Group{1}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	r := c.NewReader()
	defer r.Release()
	ev := connector.Message{ID: connector.IDProc, Data: make([]byte, 40)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Multicast(1, ev); err != nil {
			b.Fatal(err)
		}
		if _, _, err := r.Next(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkSendHandled measures a request to a fake kernel agent and the
// receipt of its reply with Receive.
func BenchmarkSendHandled(b *testing.B) {
	k := cntest.New(nil)
	id := connector.CBID{Idx: 14, Val: 1}
	k.Handle(id, func(req connector.Message, _ connector.Sender) []cntest.Reply {
		return []cntest.Reply{{Message: req}}
	})
	c, err := k.Dial(nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := connector.Message{ID: id, Data: make([]byte, 8)}
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Send(req); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.Receive(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "round-trips/s")
}
