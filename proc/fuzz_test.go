package proc

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/cnlink/connector"
)

// FuzzDecode checks that Decode never panics, fails only with a
// *DecodeError, and that what it reports agrees with the bytes. The corpus
// in testdata/fuzz/FuzzDecode holds payloads captured from the kernel.
func FuzzDecode(f *testing.F) {
	f.Add(uint32(0), []byte{})
	f.Add(uint32(1), make([]byte, 16))
	f.Fuzz(func(t *testing.T, seq uint32, data []byte) {
		var ev Event
		err := Decode(connector.Message{ID: connector.IDProc, Seq: seq, Data: data}, &ev)
		if ev.Seq != seq {
			t.Fatalf("Seq %d, want %d", ev.Seq, seq)
		}
		if len(data) >= headerLen {
			if ev.Kind != Kind(binary.NativeEndian.Uint32(data)) || ev.CPU != binary.NativeEndian.Uint32(data[4:]) {
				t.Fatalf("header decoded as %v from %x", &ev, data[:headerLen])
			}
		}
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || !errors.Is(err, connector.ErrMalformed) {
				t.Fatalf("error %v is not a *DecodeError", err)
			}
			if de.Kind == KindLost && len(data) >= headerLen {
				return // a forged loss record is refused, whatever its length
			}
			if de.Need <= len(data) {
				t.Fatalf("rejected %d bytes though %d are needed: %v", len(data), de.Need, err)
			}
			return
		}
		if ev.Kind.Known() != (ev.Raw == nil) {
			t.Fatalf("kind %v known %v but Raw %x", ev.Kind, ev.Kind.Known(), ev.Raw)
		}
		_ = ev.String()
	})
}

// FuzzListener feeds arbitrary datagrams through a Listener: it must never
// panic, and every error must leave it usable.
func FuzzListener(f *testing.F) {
	f.Add([]byte{}, false)
	f.Add(kernelDatagram(connector.IDProc, 5, 0, payload(KindExec, 0, 1, 7, 7)), false)
	f.Add(append(kernelDatagram(connector.IDProc, 5, 0, payload(KindExit, 1, 1, 7, 7, 256, 17)),
		kernelDatagram(connector.IDProc, 9, 0, payload(KindFork, 1, 1, 7, 7, 8, 8))...), true)
	f.Add(kernelDatagram(connector.IDProc, 5, 0, []byte{1, 2}), false)
	f.Fuzz(func(t *testing.T, data []byte, filtered bool) {
		k := newFakeKernel()
		// The fake answers at once; only a filtered Listen on a kernel
		// without proc_input (odd lengths here) waits out the timeout.
		k.procInput = len(data)%2 == 0
		cfg := &Config{AckTimeout: 2 * time.Millisecond}
		if filtered {
			cfg.Kinds = KindExit | KindNonzeroExit
		}
		l, err := k.listen(t, cfg)
		if err != nil {
			t.Fatal(err)
		}
		// Split data into datagrams: each starts with a 1-byte length.
		n := 0
		for len(data) > 0 {
			size := min(int(data[0]), len(data)-1)
			k.push(fakeDgram{b: data[1 : 1+size]})
			data = data[1+size:]
			n++
		}
		if err := l.SetDeadline(time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		var ev Event
		for i := 0; i < 3*n+10; i++ {
			err := l.Next(&ev)
			switch {
			case err == nil:
				if !l.all && !l.match(&ev) && ev.Kind != KindLost {
					t.Fatalf("filter %v delivered %v", l.kinds, &ev)
				}
			case errors.Is(err, connector.ErrMalformed), errors.Is(err, connector.ErrTruncated):
			case errors.Is(err, connector.ErrOverrun):
				t.Fatalf("overrun returned as an error: %v", err)
			default:
				return // the deadline: everything was read
			}
		}
		t.Fatalf("%d datagrams still not read after %d calls", n, 3*n+10)
	})
}
