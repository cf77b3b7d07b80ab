//go:build linux

package connector_test

// Benchmarks over real sockets, comparing the package's receive and send
// paths with plain system-call loops on the same kind of socket:
//
//	go test -run '^$' -bench .
//
// Each reports ns/op, MB/s (datagram bytes, headers included), msgs/s,
// allocations per message and cpu-ns/msg: the process's CPU time per
// message, which a busy machine disturbs much less than wall time.
//
// Receive benchmarks time only the receiving: a raw peer socket queues a
// chunk of messages untimed, then the path under test reads them, and so on.
// Send benchmarks send to the kernel (an id no agent registers, dropped on
// arrival) or to a peer drained by a raw loop in another goroutine, with a
// large receive buffer or with the kernel's smallest, where the sender
// keeps waiting for room.

import (
	"fmt"
	"testing"
	"time"
	"unsafe"

	"github.com/cnlink/connector"
	"golang.org/x/sys/unix"
)

// benchSizes are the payload sizes measured: a struct proc_event, and a page.
var benchSizes = []int{40, 4096}

// benchDeadline bounds one benchmark round, so that a bug fails it instead
// of hanging.
const benchDeadline = time.Minute

// newBlockingPeer returns a raw connector socket in blocking mode with a
// large receive buffer and a send timeout.
func newBlockingPeer(b *testing.B) *rawPeer {
	b.Helper()
	p := newRawPeer(b)
	if err := unix.SetsockoptInt(p.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20); err != nil {
		b.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(benchDeadline))
	if err := unix.SetsockoptTimeval(p.fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		b.Fatal(err)
	}
	if err := unix.SetsockoptTimeval(p.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		b.Fatal(err)
	}
	return p
}

// rawSend sends dgram from fd to sa, again when a signal interrupts the
// wait: with a send timeout set, the kernel does not restart the call.
func rawSend(fd int, dgram []byte, sa *unix.SockaddrNetlink) error {
	for {
		err := unix.Sendto(fd, dgram, 0, sa)
		if err != unix.EINTR {
			return err
		}
	}
}

// fill queues n copies of dgram at port from p. The receiver's buffer must
// hold them: nothing reads while it runs.
func fill(b *testing.B, p *rawPeer, port uint32, dgram []byte, n int) {
	b.Helper()
	sa := &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: port}
	for range n {
		if err := rawSend(p.fd, dgram, sa); err != nil {
			b.Fatalf("queueing messages for the receiver: %v", err)
		}
	}
}

// fillChunk is how many messages are queued at a time for the receive
// benchmarks; recvBufSize holds them whatever the payload.
const (
	fillChunk   = 1024
	recvBufSize = 32 << 20
)

// cpuTime returns the user and system CPU time the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportPerMsg reports msgs/s (b.N messages over the timed wall time) and
// cpu-ns/msg (cpu, the process's CPU time while timed, per message).
func reportPerMsg(b *testing.B, cpu time.Duration) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/msg")
}

// receiveLoop measures recv, which must take one message, over b.N
// messages queued by a peer in chunks. Only the receiving is timed, and
// besides ns/op it reports msgs/s and cpu-ns/msg (CPU time of the process
// while receiving, less sensitive than wall time to a busy machine).
func receiveLoop(b *testing.B, port uint32, dgram []byte, recv func()) {
	b.Helper()
	p := newBlockingPeer(b)
	b.SetBytes(int64(len(dgram)))
	b.ReportAllocs()
	b.ResetTimer()
	var cpu time.Duration
	for left := b.N; left > 0; {
		n := min(left, fillChunk)
		left -= n
		b.StopTimer()
		fill(b, p, port, dgram, n)
		b.StartTimer()
		c0 := cpuTime(b)
		for range n {
			recv()
		}
		cpu += cpuTime(b) - c0
	}
	b.StopTimer()
	reportPerMsg(b, cpu)
}

func BenchmarkReceive(b *testing.B) {
	requirePrivileged(b)
	for _, size := range benchSizes {
		id := testID()
		dgram := nlmsg(-1, cnmsg(id, 1, -1, payload(size, 0)))
		b.Run(fmt.Sprintf("payload=%dB/Reader.Next", size), func(b *testing.B) {
			rx := dial(b, &connector.Config{ReadBufferSize: recvBufSize})
			r := rx.NewReader()
			defer r.Release()
			receiveLoop(b, rx.PortID(), dgram, func() {
				m, _, err := r.Next()
				if err != nil || len(m.Data) != size {
					b.Fatalf("Next: %d bytes, %v", len(m.Data), err)
				}
			})
		})
		b.Run(fmt.Sprintf("payload=%dB/Reader.Next,batch=1", size), func(b *testing.B) {
			// Every Next is a blocking receive of one datagram (which
			// is queued, so recvmmsg returns at once): the per-wake-up
			// cost of the Reader's receive path on a real socket.
			rx := dial(b, &connector.Config{ReadBufferSize: recvBufSize, BatchSize: 1})
			r := rx.NewReader()
			defer r.Release()
			receiveLoop(b, rx.PortID(), dgram, func() {
				m, _, err := r.Next()
				if err != nil || len(m.Data) != size {
					b.Fatalf("Next: %d bytes, %v", len(m.Data), err)
				}
			})
		})
		b.Run(fmt.Sprintf("payload=%dB/Receive", size), func(b *testing.B) {
			rx := dial(b, &connector.Config{ReadBufferSize: recvBufSize})
			receiveLoop(b, rx.PortID(), dgram, func() {
				msgs, _, err := rx.Receive()
				if err != nil || len(msgs) != 1 || len(msgs[0].Data) != size {
					b.Fatalf("Receive: %d messages, %v", len(msgs), err)
				}
			})
		})
		b.Run(fmt.Sprintf("payload=%dB/raw-recvfrom", size), func(b *testing.B) {
			// The floor: one blocking recvfrom per datagram into one
			// reused buffer, sender address included, no parsing.
			rx := newBlockingPeer(b)
			if err := unix.SetsockoptInt(rx.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, recvBufSize); err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, connector.DefaultMessageBufferSize)
			var sa unix.RawSockaddrNetlink
			receiveLoop(b, rx.port, dgram, func() {
				var n uintptr
				var e unix.Errno
				for {
					salen := uint32(unix.SizeofSockaddrNetlink)
					n, _, e = unix.Syscall6(unix.SYS_RECVFROM, uintptr(rx.fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
						0, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&salen)))
					if e != unix.EINTR {
						break
					}
				}
				if e != 0 || int(n) != len(dgram) {
					b.Fatalf("recvfrom: %d bytes, %v", n, e)
				}
			})
		})
	}
}

// sendLoop measures send over b.N messages, reporting msgs/s and
// cpu-ns/msg besides ns/op. The CPU time is the whole process's: for sends to
// a peer it includes the goroutine draining the peer.
func sendLoop(b *testing.B, dgramLen int, send func() error) {
	b.Helper()
	b.SetBytes(int64(dgramLen))
	b.ReportAllocs()
	b.ResetTimer()
	c0 := cpuTime(b)
	for range b.N {
		if err := send(); err != nil {
			b.Fatal(err)
		}
	}
	cpu := cpuTime(b) - c0
	b.StopTimer()
	reportPerMsg(b, cpu)
}

func BenchmarkSend(b *testing.B) {
	requirePrivileged(b)
	for _, size := range benchSizes {
		id := testID()
		m := connector.Message{ID: id, Seq: 1, Data: payload(size, 0)}
		dgram := nlmsg(-1, cnmsg(id, 1, -1, m.Data))
		stop := nlmsg(-1, cnmsg(id, 0, -1, nil))

		// To the kernel, which drops ids no agent registers on arrival.
		b.Run(fmt.Sprintf("payload=%dB/Send-kernel", size), func(b *testing.B) {
			tx := dial(b, nil)
			sendLoop(b, len(dgram), func() error { return tx.Send(m) })
		})
		b.Run(fmt.Sprintf("payload=%dB/Send-kernel-KernelWait", size), func(b *testing.B) {
			tx := dial(b, &connector.Config{KernelWait: true})
			sendLoop(b, len(dgram), func() error { return tx.Send(m) })
		})
		b.Run(fmt.Sprintf("payload=%dB/raw-sendto-kernel", size), func(b *testing.B) {
			tx := newBlockingPeer(b)
			sa := &unix.SockaddrNetlink{Family: unix.AF_NETLINK}
			sendLoop(b, len(dgram), func() error { return rawSend(tx.fd, dgram, sa) })
		})

		// To a userspace peer drained by a raw loop: one with a large
		// receive buffer, and one with the kernel's smallest, where the
		// sender keeps waiting for room.
		for _, peer := range []struct {
			name   string
			rcvbuf int
		}{{"peer", 4 << 20}, {"full-peer", 1}} {
			for _, kw := range []bool{false, true} {
				name := fmt.Sprintf("payload=%dB/SendTo-%s", size, peer.name)
				if kw {
					name += "-KernelWait"
				}
				b.Run(name, func(b *testing.B) {
					rx := newDrainPeer(b, peer.rcvbuf)
					wait := drain(b, rx, len(dgram))
					tx := dial(b, &connector.Config{KernelWait: kw})
					if err := tx.SetWriteDeadline(time.Now().Add(benchDeadline)); err != nil {
						b.Fatal(err)
					}
					sendLoop(b, len(dgram), func() error { return tx.SendTo(rx.port, m) })
					wait(tx.SendTo(rx.port, connector.Message{ID: id}))
				})
			}
			b.Run(fmt.Sprintf("payload=%dB/raw-sendto-%s", size, peer.name), func(b *testing.B) {
				rx := newDrainPeer(b, peer.rcvbuf)
				wait := drain(b, rx, len(dgram))
				tx := newBlockingPeer(b)
				sa := &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: rx.port}
				sendLoop(b, len(dgram), func() error { return rawSend(tx.fd, dgram, sa) })
				wait(rawSend(tx.fd, stop, sa))
			})
		}
	}
}

// newDrainPeer returns a blocking raw peer whose receive buffer is forced
// to rcvbuf bytes (the kernel raises tiny values to its minimum).
func newDrainPeer(b *testing.B, rcvbuf int) *rawPeer {
	b.Helper()
	p := newBlockingPeer(b)
	if err := unix.SetsockoptInt(p.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
		b.Fatal(err)
	}
	return p
}

// drain reads from p in a goroutine until a datagram whose length is not
// dgramLen arrives, the benchmark's stop signal. The returned function
// takes the error of sending that signal and waits for the goroutine.
func drain(b *testing.B, p *rawPeer, dgramLen int) func(error) {
	b.Helper()
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, connector.DefaultMessageBufferSize)
		for {
			n, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(p.fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0, 0)
			if e == unix.EINTR {
				continue
			}
			if e != 0 {
				done <- fmt.Errorf("draining: %w", e)
				return
			}
			if int(n) != dgramLen {
				done <- nil
				return
			}
		}
	}()
	return func(stopErr error) {
		b.Helper()
		if stopErr != nil {
			b.Fatalf("sending the stop signal: %v", stopErr)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}
