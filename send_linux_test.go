//go:build linux

package connector_test

import (
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/cnlink/connector"
)

// TestIntegrationSendOneProcessor runs a sender at GOMAXPROCS=1 beside
// another goroutine that needs the processor (channel round trips with a
// third). A unicast to a userspace socket is first tried as a raw system
// call, which keeps the processor; it cannot sleep, and a send into a full
// receiver must wait in an ordinary system call that gives the processor
// up. So the sender must be seen waiting in an ordinary system call, the
// other goroutine must finish its work meanwhile, and Close must still end
// the wait.
func TestIntegrationSendOneProcessor(t *testing.T) {
	requirePrivileged(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for _, kw := range []bool{false, true} {
		t.Run("KernelWait="+strconv.FormatBool(kw), func(t *testing.T) {
			rx := dial(t, nil)
			if err := rx.SetReadBuffer(1); err != nil { // the kernel's minimum
				t.Fatal(err)
			}
			tx, err := connector.Dial(&connector.Config{KernelWait: kw})
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Close()
			id := testID()
			done := make(chan error, 1)
			go func() {
				for i := 0; ; i++ {
					// 16 bytes: built on the stack with KernelWait.
					if err := tx.SendTo(rx.PortID(), connector.Message{ID: id, Seq: uint32(i), Data: payload(16, 0)}); err != nil {
						done <- err
						return
					}
				}
			}()
			waitFrame := "sendRetry"
			if kw {
				waitFrame = "(*fdConn).sendto"
			}
			// A goroutine in an ordinary system call shows as
			// "[syscall]" in a stack dump; one in a raw system call
			// holds the processor, so another goroutine could not even
			// take the dump while it waits.
			if !waitUntil(func() bool { return stackHas("[syscall", "TestIntegrationSendOneProcessor", waitFrame) }) {
				t.Fatal("SendTo never waited for the full receiver in an ordinary system call")
			}
			select {
			case <-pingPong(10000):
			case err := <-done:
				t.Fatalf("SendTo to a full receiver that nobody reads returned %v", err)
			case <-time.After(waitTimeout):
				t.Fatal("another goroutine made no progress while SendTo waited for room")
			}
			if err := tx.Close(); err != nil {
				t.Fatal(err)
			}
			awaitErr(t, done, promptly, connector.ErrClosed, "SendTo ended by Close")
		})
	}
}

// pingPong passes n values between two new goroutines and closes the
// returned channel when done: work that needs a processor.
func pingPong(n int) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		ping, pong := make(chan int), make(chan int)
		go func() {
			for v := range ping {
				pong <- v + 1
			}
		}()
		for i := range n {
			ping <- i
			if <-pong != i+1 {
				panic("pong")
			}
		}
		close(ping)
	}()
	return done
}
