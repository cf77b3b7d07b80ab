package w1

import (
	"errors"
	"testing"

	"github.com/cnlink/connector"
)

// TestReportPanic: a panic of Config.OnError when the Conn reports a
// stopped Serve is recovered and counted in Stats.Panics, not swallowed.
func TestReportPanic(t *testing.T) {
	var got []error
	w := &Conn{mx: connector.NewMux(), cfg: Config{OnError: func(err error) {
		got = append(got, err)
		panic("OnError fails")
	}}}
	want := errors.New("serve stopped")
	w.report(want)
	w.report(want)
	if len(got) != 2 || got[0] != want {
		t.Fatalf("OnError got %v, want %v twice", got, want)
	}
	if n := w.Stats().Panics; n != 2 {
		t.Errorf("panics counted: %d, want 2", n)
	}
	// Without OnError nothing is called or counted.
	w = &Conn{mx: connector.NewMux()}
	w.report(want)
	if n := w.Stats().Panics; n != 0 {
		t.Errorf("panics counted without OnError: %d", n)
	}
}
