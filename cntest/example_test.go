package cntest_test

import (
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
)

// Two Conns on one fake kernel message each other by group and by port,
// with the kernel's sender addresses.
func ExampleKernel() {
	k := cntest.New(nil)
	a, err := k.Dial(&connector.Config{Groups: []connector.Group{20}})
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	b, err := k.Dial(&connector.Config{Groups: []connector.Group{20}})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	id := connector.CBID{Idx: 20, Val: 1}
	_ = a.Multicast(20, connector.Message{ID: id, Data: []byte("to all")})
	_ = a.SendTo(b.PortID(), connector.Message{ID: id, Data: []byte("to b")})
	for range 2 {
		msgs, from, err := b.Receive()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%q from a: %v, group %d\n", msgs[0].Data, from.Port == a.PortID(), from.Group)
	}
	// The sender never receives its own multicast.
	fmt.Println("queued for a:", k.Queued(a.PortID()))
	// Output:
	// "to all" from a: true, group 20
	// "to b" from a: true, group 0
	// queued for a: 0
}

// A fake kernel agent answers requests: here like the process events
// connector, with an acknowledgement multicast on group 1 carrying the
// request's ack plus one. Requests lists what the code sent, as the kernel
// decoded it.
func ExampleKernel_Handle() {
	k := cntest.New(nil)
	k.Handle(connector.IDProc, func(req connector.Message, from connector.Sender) []cntest.Reply {
		ack := connector.Message{ID: connector.IDProc, Ack: req.Ack + 1, Data: make([]byte, 40)}
		return []cntest.Reply{{Message: ack, Group: 1}}
	})
	c, err := k.Dial(&connector.Config{Groups: []connector.Group{1}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	listen := connector.Message{ID: connector.IDProc, Ack: 7, Data: []byte{1, 0, 0, 0}}
	if err := c.Send(listen); err != nil {
		log.Fatal(err)
	}
	msgs, from, err := c.Receive()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("ack %d from %v\n", msgs[0].Ack, from)
	req := k.Requests()[0]
	fmt.Printf("sent %v with netlink type %d, flags %d, length %d\n", req.Message.ID, req.Header.Type, req.Header.Flags, req.Header.Len)
	// Output:
	// ack 8 from kernel on group 1
	// sent proc with netlink type 3, flags 0, length 40
}

// Malformed bytes and spoofed senders are injected with InjectRaw; Overrun
// stands for a kernel drop, reported before the messages still queued.
func ExampleKernel_InjectRaw() {
	k := cntest.New(nil)
	c, err := k.Dial(&connector.Config{Groups: []connector.Group{1}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ev := cntest.MustDatagram(connector.Message{ID: connector.IDProc, Seq: 1})
	// A userspace port pretending to be the kernel on group 1.
	_ = k.InjectRaw(c.PortID(), connector.Sender{Port: 4242, Group: 1}, ev)
	// Netlink bytes that lie about their length.
	_ = k.InjectRaw(c.PortID(), connector.Sender{Group: 1}, ev[:20])
	_, _ = k.Multicast(1, connector.Message{ID: connector.IDProc, Seq: 2})
	_ = k.Overrun(c.PortID())
	_ = c.SetReadDeadline(time.Now().Add(time.Second))

	r := c.NewReader()
	defer r.Release()
	for range 3 {
		m, _, err := r.Next()
		switch {
		case errors.Is(err, connector.ErrOverrun):
			fmt.Println("overrun")
		case errors.Is(err, connector.ErrMalformed):
			fmt.Println("malformed")
		case err != nil:
			log.Fatal(err)
		default:
			fmt.Println("seq", m.Seq)
		}
	}
	fmt.Println("foreign:", c.Stats().Foreign)
	// Output:
	// overrun
	// malformed
	// seq 2
	// foreign: 1
}
