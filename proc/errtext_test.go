package proc_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/testutil"
	"github.com/cnlink/connector/proc"
	"github.com/cnlink/connector/proc/proctest"
)

// TestErrorTexts walks the errors of NewListener and the Listener's methods
// for doubled words and prefixes: one "proc:" or "connector:" prefix each.
func TestErrorTexts(t *testing.T) {
	defer proc.SetNamespaceCheck(func() error { return nil })()
	var errs []error
	add := func(_ any, err error) { errs = append(errs, err) }
	f := newFixture(nil)
	add(proc.NewListener(nil, nil))
	for _, cfg := range []proc.Config{{ReadBufferSize: -1}, {AckTimeout: -1}, {BatchSize: -1}, {NetNS: 3}} {
		add(proc.NewListener(f.dial(t, 4), &cfg))
	}
	anyConn, err := f.k.Dial(&connector.Config{Senders: connector.SendersAny, Groups: []connector.Group{1}})
	if err != nil {
		t.Fatal(err)
	}
	add(proc.NewListener(anyConn, nil))
	small, err := f.k.Dial(&connector.Config{MessageBufferSize: connector.MinMessageBufferSize})
	if err != nil {
		t.Fatal(err)
	}
	add(proc.NewListener(small, nil))
	noAgent, err := cntest.New(nil).Dial(&connector.Config{Groups: []connector.Group{1}})
	if err != nil {
		t.Fatal(err)
	}
	add(proc.NewListener(noAgent, nil))
	silent := newFixture(&proctest.Options{Silent: true})
	add(proc.NewListener(silent.dial(t, 4), &proc.Config{AckTimeout: 10 * time.Millisecond}))
	c := f.dial(t, 4)
	l, err := proc.NewListener(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	add(proc.NewListener(c, nil))
	l.Close()
	errs = append(errs, l.Close())
	add(l.Drops())
	var ev proc.Event
	errs = append(errs, l.Next(&ev))
	for i, err := range errs {
		testutil.CheckErrorText(t, fmt.Sprintf("operation %d", i), err, 1, "proc: ", "connector: ")
	}
}
