package w1_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/testutil"
	"github.com/cnlink/connector/w1"
	"github.com/cnlink/connector/w1/w1test"
)

// TestErrorTexts walks the errors of the package's operations on the fake
// kernel: each has the one "w1: op: detail" shape, with no second prefix
// (w1's or connector's) and no doubled word inside.
func TestErrorTexts(t *testing.T) {
	var errs []error
	add := func(_ any, err error) { errs = append(errs, err) }
	add(w1.Dial(&w1.Config{Timeout: -1}))
	add(w1.NewConn(nil, nil))
	k := cntest.New(nil)
	c, err := k.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	add(w1.NewConn(c, &w1.Config{ReadBufferSize: -1}))
	closed, err := k.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	add(w1.NewConn(closed, nil))

	// No agent, then an agent that never answers.
	w, err := w1.NewConn(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	add(w.Masters(ctxT(t)))
	k.Handle(w1.ID, func(connector.Message, connector.Sender) []cntest.Reply { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	_, err = w.Masters(ctx)
	cancel()
	if !errors.Is(err, w1.ErrNoReply) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("no reply: %v; want ErrNoReply and context.DeadlineExceeded", err)
	}
	errs = append(errs, err)

	// A w1 agent: transactions refused before and after sending.
	_, a, w2 := fake(t, nil)
	m := a.AddMaster()
	errs = append(errs,
		w2.Master(m).Write(make([]byte, 70000)).Do(ctxT(t)),
		w2.Master(m).Write(make([]byte, 20000)).Do(ctxT(t)),
		w2.Master(m).Do(ctxT(t)),
		w2.Master(99).Reset().Do(ctxT(t)),
		w2.Slave(w1.NewSlaveID(0x28, 1)).Read(make([]byte, 2)).Do(ctxT(t)),
	)
	tx := w2.Master(m).Write([]byte{1})
	_ = tx.Do(ctxT(t))
	errs = append(errs, tx.Do(ctxT(t)))
	add(w2.Slaves(ctxT(t), 99))
	add(w1.ParseSlaveID("28.0000079e36c0.9a"))
	add(w1.ParseSlaveID("xx"))
	w2.Close()
	add(w2.Masters(ctxT(t)))
	if err := w2.Close(); !errors.Is(err, connector.ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
	errs = append(errs, w2.Close())

	// Watch: no agent, a malformed notification, a message that is not one.
	ev := joinEvents(t, cntest.New(nil))
	for _, err := range w1.Watch(ctxT(t), ev) {
		errs = append(errs, err)
		break
	}
	k3 := cntest.New(nil)
	w1test.New(k3)
	ev3 := joinEvents(t, k3)
	if _, err := k3.Multicast(w1.Group, connector.Message{ID: w1.ID, Data: []byte{1, 2, 3}}); err != nil {
		t.Fatal(err)
	}
	if err := k3.Unicast(ev3.PortID(), connector.Message{ID: connector.CBID{Idx: 0x123, Val: 4}}); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, err := range w1.Watch(ctxT(t), ev3) {
		errs = append(errs, err)
		if n++; n == 2 {
			break
		}
	}
	for i, err := range errs {
		t.Logf("%d: %v", i, err)
		testutil.CheckErrorShape(t, fmt.Sprintf("operation %d", i), err, "w1")
	}
	if !errors.Is(errs[len(errs)-1], w1.ErrNotEvent) || !errors.Is(errs[len(errs)-2], connector.ErrMalformed) {
		t.Errorf("Watch: %v; want a malformed notification, then ErrNotEvent", errs[len(errs)-2:])
	}
}
