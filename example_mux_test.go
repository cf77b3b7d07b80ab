package connector_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
)

// A server answers requests by callback id, and a client calls it. The fake
// kernel (cntest) stands in for the real one; with connector.Dial the code
// is the same (sending to another socket then needs CAP_NET_ADMIN).
func ExampleMux() {
	k := cntest.New(nil)
	server, _ := k.Dial(nil)
	defer server.Close()
	client, _ := k.Dial(nil)
	defer client.Close()

	echo := connector.CBID{Idx: 0x627573, Val: 1} // an id of our own
	mx := connector.NewMux()
	mx.HandleFunc(echo, func(r connector.Request) {
		// r.Msg.Data is valid only during the call; Reply sends it now.
		reply := connector.Message{ID: echo, Seq: r.Msg.Seq, Ack: r.Msg.Seq + 1, Data: r.Msg.Data}
		if err := r.Reply(reply); err != nil {
			log.Print(err)
		}
	})
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- mx.Serve(ctx, server, nil) }()

	callCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := connector.Message{ID: echo, Seq: 1, Data: []byte("hello")}
	m, from, err := connector.Call(callCtx, client, req, connector.ToPort(server.PortID()), connector.MatchSeqAck)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s from the server's port: %v\n", m.Data, from.Port == server.PortID())

	stop()
	fmt.Println(<-served)
	// Output:
	// hello from the server's port: true
	// connector: serve: context canceled
}

// Start Serve on a goroutine and wait until it reads the Conn: from then on
// a Call on the same Conn gets its reply through Serve, and everything else
// reaches the routes. (Before, the call would read the Conn itself; give it
// the Mux with WithUnmatched and nothing is lost either way.)
func ExampleServeOptions() {
	k := cntest.New(nil)
	k.Handle(connector.IDProc, func(req connector.Message, _ connector.Sender) []cntest.Reply {
		event := connector.Message{ID: connector.IDProc, Seq: 76, Data: []byte("event")}
		ack := connector.Message{ID: connector.IDProc, Seq: 77, Ack: req.Ack + 1}
		return []cntest.Reply{{Message: event, Group: 1}, {Message: ack, Group: 1}}
	})
	c, _ := k.Dial(&connector.Config{Groups: []connector.Group{connector.IDProc.Group()}})
	defer c.Close()

	mx := connector.NewMux()
	mx.HandleFunc(connector.IDProc, func(r connector.Request) { fmt.Printf("route: %s\n", r.Msg.Data) })
	ctx, stop := context.WithCancel(context.Background())
	started := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		served <- mx.Serve(ctx, c, &connector.ServeOptions{OnStart: func(*connector.Conn) { close(started) }})
	}()
	select {
	case <-started:
	case err := <-served: // Serve could not start
		log.Fatal(err)
	}

	callCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := connector.Message{ID: connector.IDProc, Ack: 41, Data: []byte{1, 0, 0, 0}}
	m, _, err := connector.Call(callCtx, c, req, connector.Destination{}, connector.MatchAckPlusOne, connector.WithUnmatched(mx))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ack", m.Ack, "claimed by Serve:", mx.Stats().Claimed)
	stop()
	<-served
	// Output:
	// route: event
	// ack 42 claimed by Serve: 1
}

// Call a kernel agent and wait for its acknowledgement. The process events
// connector acknowledges a subscription with ack+1 on its multicast group,
// so the socket joins the group first. Here a fake agent plays cn_proc.
func ExampleCall() {
	k := cntest.New(nil)
	k.Handle(connector.IDProc, func(req connector.Message, _ connector.Sender) []cntest.Reply {
		ack := connector.Message{ID: connector.IDProc, Seq: 77, Ack: req.Ack + 1}
		return []cntest.Reply{{Message: ack, Group: connector.IDProc.Group()}}
	})
	c, _ := k.Dial(&connector.Config{Groups: []connector.Group{connector.IDProc.Group()}})
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	listen := []byte{1, 0, 0, 0} // PROC_CN_MCAST_LISTEN, host byte order
	req := connector.Message{ID: connector.IDProc, Ack: 0x5eed, Data: listen}
	m, from, err := connector.Call(ctx, c, req, connector.Destination{}, connector.MatchAckPlusOne)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("ack %#x from %v\n", m.Ack, from)

	// An id that no agent registered fails at once instead of timing out.
	_, _, err = connector.Call(ctx, c, connector.Message{ID: connector.IDW1}, connector.Destination{}, connector.MatchSeqAck)
	fmt.Println(err)
	// Output:
	// ack 0x5eee from kernel on group 1
	// connector: call: no kernel agent is registered for this callback id: nothing receives id 3:1 in the kernel (registered: cntest 1:1); load the w1 core module wire (modprobe wire; the kernel needs CONFIG_W1_CON)
}

// Exchange collects several replies to one request: here two data records
// and a status record, as w1 answers a command, until the status arrives.
func ExampleExchange() {
	k := cntest.New(nil)
	k.Handle(connector.IDW1, func(req connector.Message, _ connector.Sender) []cntest.Reply {
		data := func(s string) cntest.Reply {
			return cntest.Reply{Message: connector.Message{ID: req.ID, Seq: req.Seq, Ack: req.Seq + 1, Data: []byte(s)}}
		}
		status := cntest.Reply{Message: connector.Message{ID: req.ID, Seq: req.Seq, Ack: req.Ack}}
		return []cntest.Reply{data("first"), data("second"), status}
	})
	c, _ := k.Dial(nil)
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := connector.Message{ID: connector.IDW1, Seq: 1, Ack: 1000}
	err := connector.Exchange(ctx, c, req, connector.Destination{}, connector.MatchSeq, func(m connector.Message, _ connector.Sender) bool {
		if m.Ack == req.Ack {
			fmt.Println("status")
			return false // done
		}
		fmt.Printf("data %s\n", m.Data)
		return true
	})
	fmt.Println(err)
	// Output:
	// data first
	// data second
	// status
	// <nil>
}

// List the kernel agents of this machine (Linux only; the file exists only
// in the initial network namespace).
func ExampleAgents() {
	agents, err := connector.Agents()
	if err != nil {
		log.Fatal(err)
	}
	for _, a := range agents {
		fmt.Println(a.Name, a.ID)
	}
}

// A cntest Conn lists the fake's agents, so that code checking for an agent
// can be tested without it.
func ExampleConn_Agents() {
	k := cntest.New(nil)
	k.Handle(connector.IDW1, func(connector.Message, connector.Sender) []cntest.Reply { return nil })
	c, _ := k.Dial(nil)
	defer c.Close()
	agents, err := c.Agents()
	fmt.Println(agents, err)
	// Output:
	// [cntest 3:1] <nil>
}

// A slow handler behind a Queue: Serve copies each message into the queue
// and goes on reading; what does not fit is dropped and counted.
func ExampleQueue() {
	slow := connector.HandlerFunc(func(r connector.Request) {
		time.Sleep(10 * time.Millisecond) // stands for slow work
	})
	q, err := connector.NewQueue(slow, 64, func(err error) { log.Print(err) })
	if err != nil {
		log.Fatal(err)
	}
	defer q.Close()
	mx := connector.NewMux()
	mx.Handle(connector.CBID{Idx: 0x627573, Val: 1}, q)
	// ... mx.Serve(ctx, c, nil)
}

// Routes by exact id win over routes by index, which win over NotFound;
// removing a route makes its messages fall through.
func ExampleMux_HandleIndex() {
	k := cntest.New(nil)
	server, _ := k.Dial(nil)
	defer server.Close()
	peer, _ := k.Dial(nil)
	defer peer.Close()

	got := make(chan string, 1)
	say := func(route string) connector.HandlerFunc {
		return func(r connector.Request) { got <- fmt.Sprintf("%v -> %s", r.Msg.ID, route) }
	}
	mx := connector.NewMux()
	exact := mx.Handle(connector.CBID{Idx: 0x100, Val: 1}, say("exact"))
	mx.HandleIndex(0x100, say("index 0x100"))
	mx.NotFound(say("not found"))
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go mx.Serve(ctx, server, nil)

	send := func(idx, val uint32) {
		_ = peer.SendTo(server.PortID(), connector.Message{ID: connector.CBID{Idx: idx, Val: val}})
		fmt.Println(<-got)
	}
	send(0x100, 1)
	send(0x100, 2)
	send(0x200, 1)
	exact.Remove()
	send(0x100, 1)
	// Output:
	// 256:1 -> exact
	// 256:2 -> index 0x100
	// 512:1 -> not found
	// 256:1 -> index 0x100
}
