package connector_test

import (
	"slices"
	"testing"
	"time"

	"github.com/cnlink/connector"
)

// BenchmarkKernelWaitUnblock measures how long a Reader blocked in a
// Config.KernelWait receive takes to return after Close, and after a read
// deadline set to a time that has passed: both take effect at the end of
// the current wait slice (10 ms of SO_RCVTIMEO, rounded up by the kernel to
// clock ticks) plus the thread's wake-up. Each op is one of each; the
// metrics are the median and the largest of the b.N samples, in ms (the
// time per op holds the setup and means nothing). Config.KernelWait's doc
// quotes it:
//
//	go test -run '^$' -bench BenchmarkKernelWaitUnblock -benchtime 100x .
//
// The Reader is given 25 ms to enter its wait before each measurement: its
// entry into the kernel's wait is not an event this process can wait for.
func BenchmarkKernelWaitUnblock(b *testing.B) {
	var closeD, deadlineD []float64
	measure := func(act func(c *connector.Conn) error) float64 {
		c, err := connector.Dial(&connector.Config{KernelWait: true})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		done := make(chan time.Time, 1)
		go func() {
			_, _, _ = c.NewReader().Next()
			done <- time.Now()
		}()
		time.Sleep(25 * time.Millisecond)
		start := time.Now()
		if err := act(c); err != nil {
			b.Fatal(err)
		}
		return float64((<-done).Sub(start)) / float64(time.Millisecond)
	}
	for b.Loop() {
		closeD = append(closeD, measure(func(c *connector.Conn) error { return c.Close() }))
		deadlineD = append(deadlineD, measure(func(c *connector.Conn) error { return c.SetReadDeadline(time.Now()) }))
	}
	slices.Sort(closeD)
	slices.Sort(deadlineD)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(closeD[len(closeD)/2], "close-median-ms")
	b.ReportMetric(closeD[len(closeD)-1], "close-max-ms")
	b.ReportMetric(deadlineD[len(deadlineD)/2], "deadline-median-ms")
	b.ReportMetric(deadlineD[len(deadlineD)-1], "deadline-max-ms")
}
