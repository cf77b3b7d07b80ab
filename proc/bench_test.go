package proc

import "testing"

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
