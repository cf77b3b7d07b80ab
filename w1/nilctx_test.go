package w1_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cnlink/connector/internal/testutil"
	"github.com/cnlink/connector/w1"
)

// TestNilContext: every entry point that takes a context.Context returns
// (or yields) an error naming the nil ctx instead of panicking; a Tx given
// one has not run, and Do with a context then runs it.
func TestNilContext(t *testing.T) {
	_, a, w := fake(t, nil)
	m := a.AddMaster()
	var nilCtx context.Context
	var errs []error
	add := func(_ any, err error) { errs = append(errs, err) }
	add(w.Masters(nilCtx))
	add(w.Slaves(nilCtx, m))
	add(w.Search(nilCtx, m))
	add(w.AlarmSearch(nilCtx, m))
	errs = append(errs, w.AddSlave(nilCtx, m, w1.NewSlaveID(0x28, 1)))
	errs = append(errs, w.RemoveSlave(nilCtx, m, w1.NewSlaveID(0x28, 1)))
	add(w.Reset(nilCtx, m))
	tx := w.Master(m).Write([]byte{1})
	errs = append(errs, tx.Do(nilCtx))
	for _, err := range w.Poll(nilCtx, time.Second) {
		errs = append(errs, err)
	}
	for _, err := range w1.Watch(nilCtx, nil) {
		errs = append(errs, err)
	}
	if len(errs) != 10 {
		t.Errorf("%d errors, want 10 (the iterators yield one each)", len(errs))
	}
	for i, err := range errs {
		testutil.CheckErrorShape(t, "nil ctx", err, "w1")
		if err == nil || !strings.Contains(err.Error(), "ctx is nil") {
			t.Errorf("entry point %d with a nil ctx: %v; want an error saying ctx is nil", i, err)
		}
	}
	if err := tx.Do(ctxT(t)); err != nil {
		t.Errorf("Do after a Do with a nil ctx: %v; want the Tx to run", err)
	}
}
