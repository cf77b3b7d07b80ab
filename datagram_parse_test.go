package connector_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
)

// FuzzParseDatagram checks ParseDatagram and DatagramParser against the
// reference decoder of the wire format (refDatagram, fuzz_test.go), and
// against each other. Its seeds in testdata/fuzz/FuzzParseDatagram are
// datagrams captured from a real kernel (the FuzzReader seeds' bytes).
func FuzzParseDatagram(f *testing.F) {
	addShapes(f, func(b []byte) { f.Add(b) })
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, err := connector.ParseDatagram(data)
		want, werr := refDatagram(data)
		if (err == nil) != (werr == nil) {
			t.Fatalf("ParseDatagram error %v, reference %v", err, werr)
		}
		if err != nil {
			checkMalformed(t, err)
		}
		if err := sameMessages(msgs, want); err != nil {
			t.Fatal(err)
		}
		var p connector.DatagramParser
		p.Reset(data)
		var walked []connector.Message
		var perr error
		for {
			m, ok, err := p.Next()
			if !ok {
				perr = err
				break
			}
			walked = append(walked, m)
		}
		if diff := sameMessages(walked, msgs); diff != nil || (perr == nil) != (err == nil) {
			t.Fatalf("DatagramParser: %v, error %v; ParseDatagram error %v", diff, perr, err)
		}
		// Once done, the parser stays done.
		if m, ok, err := p.Next(); ok || err != nil {
			t.Fatalf("Next after the end: %+v, %v, %v", m, ok, err)
		}
	})
}

func TestParseDatagramErrors(t *testing.T) {
	ev := cntest.MustDatagram(connector.Message{ID: connector.IDProc, Seq: 7, Data: []byte("event")})
	for name, tc := range map[string]struct {
		b    []byte
		msgs int
	}{
		"empty":              {nil, 0},
		"short header":       {ev[:10], 0},
		"cut in the payload": {ev[:30], 0},
		"junk after":         {append(append([]byte(nil), ev...), 1, 2, 3, 4, 5, 6, 7, 8), 1},
	} {
		msgs, err := connector.ParseDatagram(tc.b)
		var me *connector.MessageError
		if !errors.Is(err, connector.ErrMalformed) || !errors.As(err, &me) || me.Reason == "" {
			t.Errorf("%s: error %v, want a *MessageError matching ErrMalformed", name, err)
		}
		if len(msgs) != tc.msgs {
			t.Errorf("%s: %d messages before the error, want %d", name, len(msgs), tc.msgs)
		}
	}
	// Alignment padding after a message is not an error.
	padded := append(append([]byte(nil), ev...), make([]byte, (4-len(ev)%4)%4)...)
	if msgs, err := connector.ParseDatagram(padded); err != nil || len(msgs) != 1 || string(msgs[0].Data) != "event" || msgs[0].Seq != 7 {
		t.Errorf("padded datagram: %+v, %v", msgs, err)
	}
}

func TestAllocsDatagramParser(t *testing.T) {
	d, err := cntest.Bundle(connector.Message{ID: connector.IDW1, Data: []byte("a")}, connector.Message{ID: connector.IDW1, Data: []byte("bc")})
	if err != nil {
		t.Fatal(err)
	}
	d = append(d, cntest.MustDatagram(connector.Message{ID: connector.IDProc, Data: make([]byte, 40)})...)
	var p connector.DatagramParser
	allocs := testing.AllocsPerRun(1000, func() {
		p.Reset(d)
		n := 0
		for {
			_, ok, err := p.Next()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			n++
		}
		if n != 3 {
			t.Fatalf("%d messages, want 3", n)
		}
	})
	if allocs != 0 {
		t.Errorf("DatagramParser allocates %.1f times per datagram, want 0", allocs)
	}
}

func TestSenderFromAddr(t *testing.T) {
	for _, tc := range []struct {
		port, groups uint32
		want         connector.Sender
	}{
		{0, 0, connector.Sender{}},
		{0, 1, connector.Sender{Group: 1}},
		{0, 1 << 31, connector.Sender{Group: 32}},
		{4242, 1 << 11, connector.Sender{Port: 4242, Group: 12}},
		{4242, 0, connector.Sender{Port: 4242}},
	} {
		got := connector.SenderFromAddr(tc.port, tc.groups)
		if got != tc.want {
			t.Errorf("SenderFromAddr(%d, %#x) = %+v, want %+v", tc.port, tc.groups, got, tc.want)
		}
	}
	// The policy a Conn applies: a userspace port on a kernel group is
	// refused by the default policy, the kernel accepted by every one.
	if connector.SendersDefault.Accepts(connector.SenderFromAddr(4242, 1)) {
		t.Error("SendersDefault accepts a userspace sender on group 1")
	}
	if !connector.SendersKernelOnly.Accepts(connector.SenderFromAddr(0, 1)) {
		t.Error("SendersKernelOnly refuses the kernel on group 1")
	}
}

// A program that receives datagrams itself, here one that a kernel agent
// would send (cntest builds it), checks the sender and walks the messages
// as a Reader does.
func ExampleParseDatagram() {
	datagram := cntest.MustDatagram(connector.Message{ID: connector.IDProc, Seq: 1, Data: []byte("payload")})
	port, groups := uint32(0), uint32(1) // the source address's nl_pid and nl_groups

	from := connector.SenderFromAddr(port, groups)
	if !connector.SendersKernelOnly.Accepts(from) {
		return // not from the kernel: drop it
	}
	msgs, err := connector.ParseDatagram(datagram)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range msgs {
		fmt.Printf("%v from %v: seq %d, %q\n", m.ID, from, m.Seq, m.Data)
	}
	// Output:
	// proc from kernel on group 1: seq 1, "payload"
}

func ExampleDatagramParser() {
	datagram, _ := cntest.Bundle(
		connector.Message{ID: connector.IDW1, Seq: 1, Data: []byte("first")},
		connector.Message{ID: connector.IDW1, Seq: 1, Data: []byte("second")},
	)
	var p connector.DatagramParser // reuse it: it allocates nothing
	p.Reset(datagram)
	for {
		m, ok, err := p.Next()
		if err != nil {
			fmt.Println(err)
			return
		}
		if !ok {
			break
		}
		fmt.Printf("%v: %s\n", m.ID, m.Data)
	}
	// Output:
	// w1: first
	// w1: second
}
