package connector_test

import (
	"errors"
	"fmt"
	"log"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/proc"
)

// A process monitor whose main work is reading events: its receives wait in
// the kernel (KernelWait) in a raw system call that keeps the goroutine's
// processor (RawWait), the least CPU per event when it keeps up with a
// storm. The Conn is the one proc.Listen would open; proc.NewListener
// subscribes it.
func ExampleConfig_rawWait() {
	c, err := connector.Dial(&connector.Config{
		Groups:            []connector.Group{connector.IDProc.Group()},
		MessageBufferSize: proc.MessageBufferSize,
		BatchSize:         64,
		Senders:           connector.SendersKernelOnly,
		KernelWait:        true,
		RawWait:           true,
	})
	if err != nil {
		log.Fatal(err)
	}
	l, err := proc.NewListener(c, &proc.Config{ReadBufferSize: 4 << 20})
	if err != nil {
		c.Close() // NewListener leaves c open when it fails
		log.Fatal(err)
	}
	defer l.Close() // closes c too
	var ev proc.Event
	for {
		if err := l.Next(&ev); err != nil {
			if errors.Is(err, connector.ErrClosed) {
				return
			}
			log.Fatal(err)
		}
		fmt.Println(ev.Kind, ev.PID)
	}
}
