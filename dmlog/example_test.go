package dmlog_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/dmlog"
	"github.com/cnlink/connector/dmlog/dmlogtest"
)

// Serve in-memory logs for every mirror whose table names the userspace log
// type. On a real system, dial with connector.Dial and run as root; here
// dmlogtest plays the kernel on a fake connector and sends what the kernel
// sends when "0 8192 mirror userspace 3 m1 core 1024 ..." is loaded.
func Example() {
	k := cntest.New(nil) // on Linux: c, err := connector.Dial(nil)
	dm := dmlogtest.New(k)
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

	m := dm.Mirror("m1", 0xffff888001000000)
	if _, err := m.Ctr(8192, "core", "1024"); err != nil {
		log.Fatal(err)
	}
	size, _ := m.RegionSize()
	n, _ := m.SyncCount()
	fmt.Println("region size:", size, "sectors; in sync:", n)
	m.Mark(2)
	m.Flush()
	clean, _ := m.IsClean(2)
	fmt.Println("region 2 clean after a mark:", clean)
	// Output:
	// region size: 1024 sectors; in sync: 0
	// region 2 clean after a mark: false
}

// A MemLog follows the kernel's core log; dmlog.Server calls it for each
// request.
func ExampleMemLog() {
	l, err := dmlog.NewCoreLog(8192, []string{"core", "1024"}) // 8 regions
	if err != nil {
		log.Fatal(err)
	}
	l.Mark([]uint64{2})
	clean, _ := l.IsClean(2)
	fmt.Println("region 2 clean:", clean)
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
