package connector_test

// Allocation guards for the fast paths, on real sockets: in steady state
// Reader.Next and the send calls allocate nothing per message.

import (
	"strconv"
	"testing"

	"github.com/cnlink/connector"
)

// allocRuns is how many messages each guard measures.
const allocRuns = 500

func TestAllocsReaderNext(t *testing.T) {
	requirePrivileged(t)
	for _, mode := range waitModes {
		t.Run(mode.name, func(t *testing.T) { allocsReaderNext(t, mode) })
	}
}

func allocsReaderNext(t *testing.T, mode waitMode) {
	rx := dial(t, mode.config(connector.Config{ReadBufferSize: 8 << 20}))
	tx := dial(t, nil)
	id := testID()
	// Queue every message first: the guard measures the receive path, not
	// a sender running at the same time.
	for i := range allocRuns + 2*connector.DefaultBatchSize {
		if err := tx.SendTo(rx.PortID(), connector.Message{ID: id, Seq: uint32(i), Data: payload(40, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	r := rx.NewReader()
	defer r.Release()
	next := uint32(0)
	allocs := testing.AllocsPerRun(allocRuns, func() {
		m, _, err := r.Next()
		if err != nil || m.ID != id || m.Seq != next {
			t.Fatalf("Next: seq %d id %v err %v; want seq %d", m.Seq, m.ID, err, next)
		}
		next++
	})
	if allocs != 0 {
		t.Errorf("Reader.Next allocates %.2f times per message in steady state, want 0", allocs)
	}
}

func TestAllocsSend(t *testing.T) {
	requirePrivileged(t)
	for _, kw := range []bool{false, true} {
		t.Run("KernelWait="+strconv.FormatBool(kw), func(t *testing.T) { allocsSend(t, kw) })
	}
}

func allocsSend(t *testing.T, kernelWait bool) {
	rx := dial(t, &connector.Config{ReadBufferSize: 8 << 20, Groups: []connector.Group{groupExchange}})
	tx := dial(t, &connector.Config{KernelWait: kernelWait})
	m := connector.Message{ID: testID(), Data: payload(40, 0)}
	for name, send := range map[string]func() error{
		"Send":      func() error { return tx.Send(m) },
		"SendTo":    func() error { return tx.SendTo(rx.PortID(), m) },
		"Multicast": func() error { return tx.Multicast(groupExchange, m) },
	} {
		allocs := testing.AllocsPerRun(allocRuns, func() {
			if err := send(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s allocates %.2f times per message in steady state, want 0", name, allocs)
		}
	}
}

func TestAllocsReceive(t *testing.T) {
	requirePrivileged(t)
	rx := dial(t, &connector.Config{ReadBufferSize: 8 << 20})
	tx := dial(t, nil)
	id := testID()
	for i := range allocRuns + 1 {
		if err := tx.SendTo(rx.PortID(), connector.Message{ID: id, Seq: uint32(i), Data: payload(40, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	allocs := testing.AllocsPerRun(allocRuns, func() {
		msgs, _, err := rx.Receive()
		if err != nil || len(msgs) != 1 {
			t.Fatalf("Receive: %d messages, %v", len(msgs), err)
		}
	})
	// Receive hands out memory the caller owns: one copy of the
	// datagram's payloads and the slice of messages, nothing more.
	if allocs > 2 {
		t.Errorf("Receive allocates %.2f times per datagram, want at most 2 (the owned payload and the message slice)", allocs)
	}
}
