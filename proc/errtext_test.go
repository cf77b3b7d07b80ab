package proc_test

import (
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/proc"
	"github.com/cnlink/connector/proc/proctest"
)

// repeated returns the first word of s that follows itself, or "". (A
// deliberate repeat of the root package's test helper: test packages cannot
// share it.)
func repeated(s string) string {
	w := strings.Fields(strings.ToLower(s))
	n := 0
	for _, f := range w {
		if f = strings.TrimFunc(f, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }); f != "" {
			w[n] = f
			n++
		}
	}
	for i := 1; i < n; i++ {
		if w[i] == w[i-1] {
			return w[i]
		}
	}
	return ""
}

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
	for _, err := range errs {
		if err == nil {
			t.Error("an operation that must fail succeeded")
			continue
		}
		s := err.Error()
		if w := repeated(s); w != "" {
			t.Errorf("%q repeats %q", s, w)
		}
		if n := strings.Count(s, "proc: ") + strings.Count(s, "connector: "); n != 1 {
			t.Errorf("%q has %d prefixes, want one", s, n)
		}
	}
}
