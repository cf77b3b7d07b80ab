package dmlog_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/dmlog"
)

// Serve in-memory logs for every mirror whose table names the userspace log
// type. On a real system, dial the kernel with connector.Dial and run as
// root; here a fake kernel sends the first two requests of a mirror load.
func Example() {
	k := cntest.New(nil) // stands in for the kernel: connector.Dial(nil) on Linux
	replies := make(chan connector.Message, 2)
	k.Handle(connector.IDDM, func(m connector.Message, _ connector.Sender) []cntest.Reply {
		replies <- m
		return nil
	})
	c, err := k.Dial(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	s := &dmlog.Server{SkipPrivilegeCheck: true} // zero value: MemLogs; the check is for real kernels
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Serve(ctx, c)
	k.WaitReceiving(c.PortID(), time.Second)

	// What the kernel sends when "0 8192 mirror userspace 3 m1 core 1024 ..."
	// is loaded.
	for i, r := range []dmlog.Request{
		{Header: dmlog.Header{UUID: "m1", LUID: 0xffff888001000000, Version: dmlog.Version, Seq: 1, Type: dmlog.TypeCtr}, Data: []byte("8192 core 1024")},
		{Header: dmlog.Header{UUID: "m1", LUID: 0xffff888001000000, Version: dmlog.Version, Seq: 2, Type: dmlog.TypeGetRegionSize}},
	} {
		b, _ := dmlog.AppendRequest(nil, r)
		k.Multicast(7, connector.Message{ID: connector.IDDM, Seq: uint32(i + 1), Data: b})
		rep, _ := dmlog.ParseReply((<-replies).Data)
		fmt.Printf("%v seq %d: errno %d, %d data bytes\n", rep.Type, rep.Seq, rep.Errno(), len(rep.Data))
		if rep.Type == dmlog.TypeGetRegionSize {
			size, _ := dmlog.ParseUint64(rep.Data)
			fmt.Println("region size:", size, "sectors")
		}
	}
	// Output:
	// CTR seq 1: errno 0, 0 data bytes
	// GET_REGION_SIZE seq 2: errno 0, 8 data bytes
	// region size: 1024 sectors
}

// A MemLog follows the kernel's core log; dmlog.Server calls it for each
// request.
func ExampleMemLog() {
	l, err := dmlog.NewCoreLog(8192, []string{"core", "1024"}) // 8 regions
	if err != nil {
		log.Fatal(err)
	}
	l.Mark([]uint64{2})
	fmt.Println("region 2 clean:", l.IsClean(2))
	r, _ := l.ResyncWork()
	again, _ := l.ResyncWork() // a repeated request gets the same region
	l.SetRegionSync(r, true)
	l.SetRegionSync(r, true) // counted once
	fmt.Println("resync", r, again, "in sync:", l.SyncCount())
	// Output:
	// region 2 clean: false
	// resync 0 0 in sync: 1
}

// Decode a request as the kernel sends it on group 7.
func ExampleParseRequest() {
	b, _ := dmlog.AppendRequest(nil, dmlog.Request{
		Header: dmlog.Header{UUID: "m1", LUID: 0xffff888001000000, Version: dmlog.Version, Seq: 12, Type: dmlog.TypeMarkRegion},
		Data:   dmlog.AppendUint64(dmlog.AppendUint64(nil, 4), 5),
	})
	r, err := dmlog.ParseRequest(b)
	if err != nil {
		log.Fatal(err)
	}
	regions, _ := r.AppendRegions(nil)
	fmt.Println(r.Type, r.Seq, r.UUID, regions)
	// Output: MARK_REGION 12 m1 [4 5]
}
