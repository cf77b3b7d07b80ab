package proc

import (
	"encoding/binary"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/transport"
)

// fakeKernel is a transport that behaves like the kernel's proc connector
// for one socket, byte for byte: it answers subscription requests as
// drivers/connector/cn_proc.c does (acknowledgement through the socket's
// filter, sequence numbers per CPU shared with events), and queues events
// the test emits. It lets unit tests drive every branch of the Listener
// without root or a particular kernel.
type fakeKernel struct {
	mu     sync.Mutex
	queue  []fakeDgram
	notify chan struct{}
	closed bool
	rdl    time.Time

	// requests are the cn_msg payloads sent to the kernel, and reqAcks
	// their ack fields.
	requests [][]byte
	reqAcks  []uint32

	// procInput makes the fake honour 8-byte struct proc_input requests
	// (Linux 6.6 and later); without it they are dropped, as before 6.6.
	procInput bool
	// silent drops every request without an acknowledgement (a
	// non-initial user or PID namespace).
	silent bool
	// ackErr is the err of every acknowledgement.
	ackErr uint32
	// dropAcks drops the next n acknowledgements as an overrun would:
	// an ENOBUFS error takes their place.
	dropAcks int

	// Per-socket state, as cn_proc keeps it since 6.6.
	hasState bool
	filter   Kind
	ignored  bool

	cpu uint32 // the CPU acknowledgements come from
	seq map[uint32]uint32
}

type fakeDgram struct {
	b    []byte
	port uint32 // sender port id
	err  error  // returned by Recv instead of a datagram
}

const fakePort = 4242

func newFakeKernel() *fakeKernel {
	return &fakeKernel{notify: make(chan struct{}), procInput: true, seq: map[uint32]uint32{}}
}

// conn wraps the fake in a *connector.Conn configured as Listen does.
func (k *fakeKernel) conn(t testing.TB, batch int) *connector.Conn {
	t.Helper()
	v, err := transport.NewConn(k, &connector.Config{
		Groups:            []connector.Group{1},
		MessageBufferSize: messageBufferSize,
		BatchSize:         batch,
		Senders:           connector.SendersKernelOnly,
	})
	if err != nil {
		t.Fatal(err)
	}
	return v.(*connector.Conn)
}

// listen subscribes a Listener over the fake.
func (k *fakeKernel) listen(t testing.TB, cfg *Config) (*Listener, error) {
	t.Helper()
	c := k.conn(t, 4)
	if cfg == nil {
		cfg = &Config{}
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 100 * time.Millisecond
	}
	l, err := listenConn(c, cfg)
	if err != nil {
		c.Close()
		return nil, err
	}
	t.Cleanup(func() { l.Close() })
	return l, nil
}

func (k *fakeKernel) wake() {
	close(k.notify)
	k.notify = make(chan struct{})
}

func (k *fakeKernel) push(d fakeDgram) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.pushLocked(d)
}

func (k *fakeKernel) pushLocked(d fakeDgram) {
	k.queue = append(k.queue, d)
	k.wake()
}

// nextSeq returns the next sequence number of cpu.
func (k *fakeKernel) nextSeq(cpu uint32) uint32 {
	s := k.seq[cpu]
	k.seq[cpu] = s + 1
	return s
}

// passes applies cn_filter to a message of kind what and exit code code.
func (k *fakeKernel) passes(what Kind, code uint32) bool {
	switch {
	case !k.hasState:
		return true
	case k.ignored:
		return false
	case k.filter == KindAll:
		return true
	case k.filter&KindNonzeroExit != 0 && what == KindExit && code != 0:
		return true
	}
	return k.filter&what != 0
}

// kernelDatagram builds a datagram as the kernel sends it (see
// cntest.Datagram): netlink header (NLMSG_DONE, flags 0, seq copied, port 0),
// cn_msg and payload.
func kernelDatagram(id connector.CBID, seq, ack uint32, payload []byte) []byte {
	return cntest.MustDatagram(connector.Message{ID: id, Seq: seq, Ack: ack, Data: payload})
}

// payload builds a 40-byte proc_event; fill sets the union (offsets from
// the start of the union).
func payload(what Kind, cpu uint32, ts uint64, union ...uint32) []byte {
	ne := binary.NativeEndian
	p := make([]byte, eventLen)
	ne.PutUint32(p[0:], uint32(what))
	ne.PutUint32(p[4:], cpu)
	ne.PutUint64(p[8:], ts)
	for i, v := range union {
		ne.PutUint32(p[16+4*i:], v)
	}
	return p
}

// emit sends an event from cpu through the socket's filter, consuming a
// sequence number. It returns the sequence number.
func (k *fakeKernel) emit(what Kind, cpu uint32, union ...uint32) uint32 {
	k.mu.Lock()
	defer k.mu.Unlock()
	seq := k.nextSeq(cpu)
	var code uint32
	if what == KindExit && len(union) > 2 {
		code = union[2]
	}
	if k.passes(what, code) {
		k.pushLocked(fakeDgram{b: kernelDatagram(connector.IDProc, seq, 0, payload(what, cpu, uint64(seq)*1000+1, union...))})
	}
	return seq
}

// lose consumes n sequence numbers of cpu without delivering them, as a
// full receive buffer would, and queues the overrun error if enobufs.
func (k *fakeKernel) lose(cpu uint32, n uint32, enobufs bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.seq[cpu] += n
	if enobufs {
		k.pushLocked(fakeDgram{err: syscall.ENOBUFS})
	}
}

func (k *fakeKernel) Recv(b *transport.Batch, block bool) (int, error) {
	for {
		k.mu.Lock()
		if k.closed {
			k.mu.Unlock()
			return 0, syscall.EBADF
		}
		if len(k.queue) > 0 {
			n := 0
			for n < len(b.Bufs) && len(k.queue) > 0 {
				d := k.queue[0]
				if d.err != nil {
					if n == 0 {
						k.queue = k.queue[1:]
						k.mu.Unlock()
						return 0, d.err
					}
					break
				}
				k.queue = k.queue[1:]
				c := copy(b.Bufs[n], d.b)
				b.Meta[n] = transport.Meta{N: len(d.b), Port: d.port, Groups: 1, Trunc: c < len(d.b)}
				n++
			}
			k.mu.Unlock()
			return n, nil
		}
		dl, ch := k.rdl, k.notify
		k.mu.Unlock()
		if !block {
			return 0, syscall.EAGAIN
		}
		if dl.IsZero() {
			<-ch
			continue
		}
		wait := time.Until(dl)
		if wait <= 0 {
			return 0, os.ErrDeadlineExceeded
		}
		timer := time.NewTimer(wait)
		select {
		case <-ch:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// Send handles a datagram sent by the socket: requests to the kernel go to
// the emulated cn_proc.
func (k *fakeKernel) Send(p []byte, port, groups uint32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if port != 0 || groups != 0 {
		return syscall.EPERM
	}
	var m connector.Message
	if len(p) < 16 || m.UnmarshalBinary(p[16:]) != nil {
		return nil
	}
	k.requests = append(k.requests, append([]byte(nil), m.Data...))
	k.reqAcks = append(k.reqAcks, m.Ack)
	if m.ID != connector.IDProc || k.silent {
		return nil
	}
	ne := binary.NativeEndian
	var op uint32
	filter := KindAll
	switch len(m.Data) {
	case 4:
		op = ne.Uint32(m.Data)
	case 8:
		if !k.procInput {
			return nil
		}
		op, filter = ne.Uint32(m.Data), Kind(ne.Uint32(m.Data[4:]))&KindAll
		if filter == 0 {
			filter = KindAll
		}
	default:
		return nil
	}
	k.hasState = true
	switch op {
	case opListen:
		k.filter, k.ignored = filter, false
	case opIgnore:
		k.filter, k.ignored = KindNone, true
	}
	seq := k.nextSeq(k.cpu)
	if !k.passes(KindNone, 0) {
		return nil
	}
	if k.dropAcks > 0 {
		k.dropAcks--
		k.pushLocked(fakeDgram{err: syscall.ENOBUFS})
		return nil
	}
	k.pushLocked(fakeDgram{b: kernelDatagram(connector.IDProc, seq, m.Ack+1, payload(KindNone, k.cpu, 1, k.ackErr))})
	return nil
}

func (k *fakeKernel) Join(uint32) error            { return nil }
func (k *fakeKernel) Leave(uint32) error           { return nil }
func (k *fakeKernel) Memberships() (uint32, error) { return 1, nil }
func (k *fakeKernel) PortID() uint32               { return fakePort }

func (k *fakeKernel) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	k.wake()
	return nil
}

func (k *fakeKernel) SetDeadline(t time.Time) error {
	k.SetWriteDeadline(t)
	return k.SetReadDeadline(t)
}

func (k *fakeKernel) SetReadDeadline(t time.Time) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.rdl = t
	k.wake()
	return nil
}

func (k *fakeKernel) SetWriteDeadline(time.Time) error { return nil }

// requestList returns a copy of the requests sent so far.
func (k *fakeKernel) requestList() [][]byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([][]byte(nil), k.requests...)
}
