package connector_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
)

// The examples that talk to the kernel need a Linux machine (and for some,
// CAP_NET_ADMIN), so they are compiled but not run; Example_fakeKernel runs
// everywhere.

// Dial a socket that listens to the process events connector's group. Join
// groups at Dial time, or later with JoinGroup.
func ExampleDial() {
	c, err := connector.Dial(&connector.Config{
		Groups:         []connector.Group{connector.IDProc.Group()},
		ReadBufferSize: 4 << 20, // absorb bursts; read back with ReadBuffer
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println("port id", c.PortID())
}

// Read messages with the allocation-free Reader until the program is
// interrupted: Close, called from another goroutine, ends the loop with an
// error matching ErrClosed.
func ExampleReader_Next() {
	c, err := connector.Dial(&connector.Config{Groups: []connector.Group{1}})
	if err != nil {
		log.Fatal(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	go func() {
		<-sig
		c.Close()
	}()

	r := c.NewReader()
	defer r.Release()
	for {
		m, from, err := r.Next()
		switch {
		case errors.Is(err, connector.ErrClosed):
			return
		case errors.Is(err, connector.ErrOverrun):
			// The kernel dropped messages; the next call goes on with what
			// is queued. Resynchronise here if the protocol needs it.
			log.Print(err)
			continue
		case errors.Is(err, connector.ErrMalformed), errors.Is(err, connector.ErrTruncated):
			log.Print(err) // reported once; the next message follows
			continue
		case err != nil:
			log.Fatal(err)
		}
		if !from.Kernel() {
			continue // a userspace peer; SendersKernelOnly drops these for you
		}
		// m.Data is valid until the next call to Next: copy what you keep.
		fmt.Printf("%v seq %d: %d bytes\n", m.ID, m.Seq, len(m.Data))
	}
}

// Send a request to a kernel agent: here the process events connector's
// subscription request, PROC_CN_MCAST_LISTEN (1), whose answer carries the
// request's ack plus one. Package proc does all of this for you.
func ExampleConn_Send() {
	c, err := connector.Dial(&connector.Config{Groups: []connector.Group{1}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	err = c.Send(connector.Message{
		ID:   connector.IDProc,
		Ack:  0x5eed,
		Data: binary.NativeEndian.AppendUint32(nil, 1),
	})
	if errors.Is(err, connector.ErrNotInitialNetNS) {
		log.Fatal("run this in the host's network namespace")
	} else if err != nil {
		log.Fatal(err)
	}
}

// Message another userspace socket by its port id. Both sides need
// CAP_NET_ADMIN only to send; the receiver learns the sender's port.
func ExampleConn_SendTo() {
	a, err := connector.Dial(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	b, err := connector.Dial(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	id := connector.CBID{Idx: 0x1234, Val: 1} // any id no kernel agent uses
	if err := a.SendTo(b.PortID(), connector.Message{ID: id, Data: []byte("ping")}); err != nil {
		log.Fatal(err)
	}
	msgs, from, err := b.Receive()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%q from port %d\n", msgs[0].Data, from.Port)
}

// Multicast to every other member of a group. Groups 1 to 10 belong to
// kernel agents, where receivers drop userspace senders by default; use
// groups from connector.NetlinkUsers (11) on for userspace buses.
func ExampleConn_Multicast() {
	const bus = connector.Group(21)
	listener, err := connector.Dial(&connector.Config{Groups: []connector.Group{bus}})
	if err != nil {
		log.Fatal(err)
	}
	defer listener.Close()
	sender, err := connector.Dial(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer sender.Close()

	m := connector.Message{ID: connector.CBID{Idx: uint32(bus), Val: 1}, Data: []byte("hello, bus")}
	if err := sender.Multicast(bus, m); err != nil {
		log.Fatal(err)
	}
	msgs, from, err := listener.Receive()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%q on group %d\n", msgs[0].Data, from.Group)
}

// Receive returns messages that the caller owns, one datagram at a time.
// Use a deadline to bound the wait.
func ExampleConn_Receive() {
	c, err := connector.Dial(&connector.Config{Groups: []connector.Group{1}, Senders: connector.SendersKernelOnly})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := c.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
		log.Fatal(err)
	}
	msgs, from, err := c.Receive()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		fmt.Println("nothing within a second")
		return
	} else if err != nil {
		log.Fatal(err)
	}
	for _, m := range msgs {
		fmt.Printf("%v from %v: % x\n", m.ID, from, m.Data)
	}
}

// Code written against *connector.Conn runs unchanged on the fake kernel of
// package cntest, which needs no privileges: here a fake agent for id 14:0x456
// answers each request with the request's ack plus one.
func Example_fakeKernel() {
	k := cntest.New(nil)
	id := connector.CBID{Idx: 14, Val: 0x456}
	k.Handle(id, func(req connector.Message, from connector.Sender) []cntest.Reply {
		reply := connector.Message{ID: id, Seq: req.Seq, Ack: req.Ack + 1, Data: []byte("pong")}
		return []cntest.Reply{{Message: reply}}
	})

	c, err := k.Dial(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := c.Send(connector.Message{ID: id, Seq: 1, Ack: 41, Data: []byte("ping")}); err != nil {
		log.Fatal(err)
	}
	msgs, from, err := c.Receive()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%v: ack %d %q from %v\n", msgs[0].ID, msgs[0].Ack, msgs[0].Data, from)
	// Output: 14:1110: ack 42 "pong" from kernel
}

// Stop a reader without closing the Conn and without a deadline: Flush wakes
// it, it returns what is still queued, then ErrFlushed. This one runs on a
// cntest fake kernel, so it needs no privileges.
func ExampleConn_Flush() {
	k := cntest.New(nil)
	c, err := k.Dial(&connector.Config{Groups: []connector.Group{20}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	id := connector.CBID{Idx: 20, Val: 1}
	for seq := uint32(1); seq <= 3; seq++ {
		if _, err := k.Multicast(20, connector.Message{ID: id, Seq: seq}); err != nil {
			log.Fatal(err)
		}
	}

	r := c.NewReader()
	defer r.Release()
	_ = c.Flush() // usually from another goroutine, while Next waits
	for {
		m, _, err := r.Next()
		if errors.Is(err, connector.ErrFlushed) {
			fmt.Println("flushed: the queue is empty")
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("seq", m.Seq)
	}
	// Output:
	// seq 1
	// seq 2
	// seq 3
	// flushed: the queue is empty
}
