package w1_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/w1"
	"github.com/cnlink/connector/w1/w1test"
)

// newFake returns a w1 Conn on a fake kernel whose w1 agent has one bus
// master with a DS18B20 on it. Real programs call w1.Dial instead.
func newFake() (*w1.Conn, *w1test.Agent) {
	k := cntest.New(nil)
	a := w1test.New(k)
	m := a.AddMaster()
	a.AttachDevice(m, w1.NewSlaveID(0x28, 0x79e36c0))
	c, err := k.Dial(nil)
	if err != nil {
		log.Fatal(err)
	}
	w, err := w1.NewConn(c, nil)
	if err != nil {
		log.Fatal(err)
	}
	return w, a
}

// List the bus masters and search each one's bus.
func ExampleConn_Search() {
	w, _ := newFake() // w, err := w1.Dial(nil)
	defer w.Close()
	ctx := context.Background()
	masters, err := w.Masters(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range masters {
		ids, err := w.Search(ctx, m)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(m, ids)
	}
	// Output: w1_bus_master1 [28-0000079e36c0]
}

// Read a DS18B20's scratchpad in one transaction: the kernel resets the
// bus, selects the slave, writes READ SCRATCHPAD (0xbe) and reads nine
// bytes while it holds the bus, and the last byte is the CRC-8 of the
// others. (Starting a conversion, 0x44, needs the strong pull-up on a
// parasite-powered sensor, which netlink cannot give: see the package
// documentation.)
func ExampleTx() {
	w, a := newFake()
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sensor := w1.NewSlaveID(0x28, 0x79e36c0)
	if _, err := w.Search(ctx, 1); err != nil { // registers the sensor
		log.Fatal(err)
	}
	// The fake bus answers with a scratchpad of 25.0625 °C.
	pad := []byte{0x91, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0f, 0x10}
	a.QueueRead(1, append(pad, w1.CRC8(pad)))

	buf := make([]byte, 9)
	if err := w.Slave(sensor).Write([]byte{0xbe}).Read(buf).Do(ctx); err != nil {
		log.Fatal(err)
	}
	if w1.CRC8(buf) != 0 {
		log.Fatal("scratchpad CRC mismatch")
	}
	raw := int16(buf[0]) | int16(buf[1])<<8
	fmt.Printf("%.4f °C\n", float64(raw)/16)
	// Output: 25.0625 °C
}

// Reset reports a presence pulse as a bool; no device is not an error.
func ExampleConn_Reset() {
	w, a := newFake()
	defer w.Close()
	present, err := w.Reset(context.Background(), 1)
	fmt.Println(present, err)
	a.SetPresence(1, false)
	present, err = w.Reset(context.Background(), 1)
	fmt.Println(present, err)
	// Output:
	// true <nil>
	// false <nil>
}

// Route notifications on a Mux: here the Conn's own, on a socket that
// joined group 3.
func ExampleEventHandler() {
	k := cntest.New(nil)
	a := w1test.New(k)
	c, err := k.Dial(&connector.Config{Groups: []connector.Group{w1.Group}})
	if err != nil {
		log.Fatal(err)
	}
	w, err := w1.NewConn(c, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	events := make(chan w1.Event, 1)
	w.Mux().Handle(w1.ID, w1.EventHandler(func(e w1.Event, err error) {
		if err == nil {
			events <- e
		}
	}))
	a.AddMaster()
	fmt.Println(<-events)
	// Output: master added w1_bus_master1
}

func ExampleParseSlaveID() {
	id, err := w1.ParseSlaveID("28-0000079e36c0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("family %#x serial %#x crc %#x %s\n", id.Family(), id.Serial(), id.CRC(), id.KernelString())

	// The kernel's log form carries the CRC, which is checked.
	k, err := w1.ParseSlaveID("28.0000079e36c0.17")
	fmt.Println(k == id, err)
	_, err = w1.ParseSlaveID("28.0000079e36c0.9a")
	fmt.Println(errors.Is(err, w1.ErrBadCRC))
	// Output:
	// family 0x28 serial 0x79e36c0 crc 0x17 28.0000079e36c0.17
	// true <nil>
	// true
}
