package proc_test

import (
	"strings"
	"testing"

	"github.com/cnlink/connector/internal/testutil"
	"github.com/cnlink/connector/proc"
)

// TestNilContext: every entry point that takes a context.Context returns
// (or yields) an error naming the nil ctx instead of panicking, as the
// package connector's "Nil arguments" rule promises.
func TestNilContext(t *testing.T) {
	defer proc.SetNamespaceCheck(func() error { return nil })()
	f := newFixture(nil)
	l, err := proc.NewListener(f.dial(t, 4), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var errs []error
	//lint:ignore SA1012 the nil context is what is tested
	errs = append(errs, proc.CheckEvents(nil, nil))
	//lint:ignore SA1012 the nil context is what is tested
	errs = append(errs, l.Rearm(nil, nil))
	n := 0
	//lint:ignore SA1012 the nil context is what is tested
	for ev, err := range l.Events(nil) {
		if ev != nil {
			t.Errorf("Events(nil) yielded an event: %+v", ev)
		}
		errs = append(errs, err)
		if n++; n > 1 {
			t.Fatal("Events(nil) yielded more than once")
		}
	}
	for i, err := range errs {
		testutil.CheckErrorShape(t, "nil ctx", err, "proc")
		if err == nil || !strings.Contains(err.Error(), "ctx is nil") {
			t.Errorf("entry point %d with a nil ctx: %v; want an error saying ctx is nil", i, err)
		}
	}
	if len(errs) != 3 {
		t.Errorf("%d errors, want 3", len(errs))
	}
}
