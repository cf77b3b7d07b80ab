package proc

import (
	"encoding/binary"
	"errors"
	"testing"

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
