package proc_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/proc"
)

// TestPendingLossAtWaitEnd: drops whose CPU has sent nothing since cannot
// be counted at a gap; when a wait ends (deadline, Flush, an Events ctx)
// Next reports them as one KindLost record with CPU CPUUnknown, then the
// error; a later gap does not count them again; Stats.Lost then equals the
// drop counter's rise (without ExactLoss) or the gaps (with it).
func TestPendingLossAtWaitEnd(t *testing.T) {
	defer proc.SetNamespaceCheck(func() error { return nil })()
	for _, tc := range []struct {
		name string
		cfg  proc.Config
		end  string // "deadline", "flush" or "ctx"
	}{
		{"all/deadline", proc.Config{}, "deadline"},
		{"kernel filter/flush", proc.Config{Kinds: proc.KindExit}, "flush"},
		{"kernel filter/ctx", proc.Config{Kinds: proc.KindExit}, "ctx"},
		{"exact/deadline", proc.Config{Kinds: proc.KindExit, ExactLoss: true, NoENOBUFS: true}, "deadline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(nil)
			cfg := tc.cfg
			l, c := f.mustListen(t, &cfg)
			proc.SetDropCounter(l, func() (uint64, error) { return f.k.Drops(c.PortID()), nil })
			var got []string
			f.emit(t, exit(0, 1, 0)) // cpu 0's baseline
			got = nextStrings(t, l, got, 1)
			want := []string{"exit cpu=0"}
			f.a.Drop(0, 3) // and then nothing from cpu 0
			if !cfg.NoENOBUFS {
				want = append(want, "lost cpu=? seq=0 lost=unknown") // the overrun
				got = nextStrings(t, l, got, 1)
			}
			// The wait ends with the 3 drops unreported.
			var ev proc.Event
			var errAfter error
			switch tc.end {
			case "deadline":
				if err := l.SetDeadline(time.Now().Add(-time.Second)); err != nil {
					t.Fatal(err)
				}
				if err := l.Next(&ev); err != nil {
					t.Fatalf("Next after the deadline: %v; want the pending loss first", err)
				}
				got = append(got, ev.String())
				errAfter = l.Next(&ev)
				if !errors.Is(errAfter, os.ErrDeadlineExceeded) {
					t.Errorf("the call after the loss record: %v; want the deadline", errAfter)
				}
				if err := l.Next(&ev); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("a second wait past the deadline: %v, %v; want the deadline, no second record", err, ev.String())
				}
				if err := l.SetDeadline(time.Time{}); err != nil {
					t.Fatal(err)
				}
			case "flush":
				if err := l.Flush(); err != nil {
					t.Fatal(err)
				}
				if err := l.Next(&ev); err != nil {
					t.Fatalf("Next after Flush: %v; want the pending loss first", err)
				}
				got = append(got, ev.String())
				if err := l.Next(&ev); !errors.Is(err, connector.ErrFlushed) {
					t.Errorf("the call after the loss record: %v; want ErrFlushed", err)
				}
			case "ctx":
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(20*time.Millisecond, cancel)
				for ev, err := range l.Events(ctx) {
					if err != nil {
						if !errors.Is(err, context.Canceled) {
							t.Errorf("Events ended with %v; want context.Canceled", err)
						}
						break
					}
					got = append(got, ev.String())
				}
			}
			// cpu 0 sends again: its gap holds the 3 drops, counted already.
			f.emit(t, exit(0, 2, 0))
			got = nextStrings(t, l, got, 1)
			want = append(want, "lost cpu=? seq=0 lost=3", "exit cpu=0")
			t.Logf("%q", got)
			for i := range got {
				if i < len(want) && len(got[i]) > len(want[i]) && want[i] == "exit cpu=0" {
					got[i] = got[i][:len(want[i])]
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			if st := l.Stats(); st.Lost != 3 {
				t.Errorf("Stats.Lost %d, want 3 (the drops, counted once); %+v", st.Lost, st)
			}
			// A loss no drop counter sees: only ExactLoss counts it, at its gap.
			f.a.Lose(0, 2)
			f.emit(t, exit(0, 3, 0))
			got = nextStrings(t, l, nil, 1)
			if cfg.ExactLoss {
				if want := "lost cpu=0"; len(got[0]) < len(want) || got[0][:len(want)] != want {
					t.Errorf("after Lose(0, 2) with ExactLoss: %q; want a loss record for cpu 0", got[0])
				}
				if st := l.Stats(); st.Lost != 5 {
					t.Errorf("Stats.Lost %d, want 5", st.Lost)
				}
			}
		})
	}
}
