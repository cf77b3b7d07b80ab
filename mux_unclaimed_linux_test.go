//go:build linux

package connector_test

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/testutil"
)

// groupMuxUnclaimed is TestIntegrationCallUnclaimed's own group.
const groupMuxUnclaimed connector.Group = 19

const procEventFork = 1 // PROC_EVENT_FORK, include/uapi/linux/cn_proc.h

// TestIntegrationCallUnclaimed calls a userspace peer that, before it
// answers, makes the kernel send the caller other messages: the process
// events of a child it starts (the caller listens to cn_proc), or a multicast
// on a userspace group the caller joined. The call reads the socket itself
// (no Serve): with the Mux as its WithUnmatched handler the Mux's routes get
// those messages; without, each one is counted in Stats.Unclaimed, so that
// every message the Conn delivered is the reply or counted.
func TestIntegrationCallUnclaimed(t *testing.T) {
	requirePrivileged(t)
	for _, noise := range []string{"process events", "multicast"} {
		for _, withMux := range []bool{true, false} {
			name := noise + "/counted"
			if withMux {
				name = noise + "/to the Mux"
			}
			t.Run(name, func(t *testing.T) {
				if noise == "process events" {
					testutil.RequireProcEvents(t)
				}
				callUnclaimed(t, noise == "process events", withMux)
			})
		}
	}
}

func callUnclaimed(t *testing.T, proc bool, withMux bool) {
	id, noiseID := testID(), testID()
	groups := []connector.Group{groupMuxUnclaimed}
	if proc {
		groups = []connector.Group{connector.IDProc.Group()}
	}
	c := dialServe(t, &connector.Config{Groups: groups, ReadBufferSize: 4 << 20})
	peer := dial(t, nil)

	mx := connector.NewMux()
	var mu sync.Mutex
	forks := map[uint32]bool{} // child pids of the fork events routed
	var routed [][]byte        // payloads of the multicasts routed
	mx.HandleFunc(connector.IDProc, func(r connector.Request) {
		d := r.Msg.Data
		// struct proc_event: what, cpu, timestamp, then fork's parent
		// pid and tgid, child pid and tgid.
		if r.From.Kernel() && len(d) >= 32 && binary.NativeEndian.Uint32(d[0:4]) == procEventFork {
			mu.Lock()
			forks[binary.NativeEndian.Uint32(d[24:28])] = true
			mu.Unlock()
		}
	})
	mx.HandleFunc(noiseID, func(r connector.Request) {
		mu.Lock()
		routed = append(routed, append([]byte(nil), r.Msg.Data...))
		mu.Unlock()
	})
	var opts []connector.CallOption
	if withMux {
		opts = append(opts, connector.WithUnmatched(mx))
	}
	if proc {
		callProcListen(t, c, opts...)
	}

	// The peer: one request, then the noise, then the answer.
	child := make(chan int, 1)
	peerDone := make(chan error, 1)
	// The peer's wait starts now: the LISTEN above may take up to 20 s
	// under other programs' event storms, past dial's read deadline.
	if err := peer.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	go func() {
		peerDone <- func() error {
			var req connector.Message
			for req.ID != id {
				msgs, _, err := peer.Receive()
				if err != nil {
					return err
				}
				for _, m := range msgs {
					if m.ID == id {
						req = m
					}
				}
			}
			if proc {
				// Its fork event is queued on c before the peer answers:
				// the kernel sends it (copy_process, proc_fork_connector)
				// before fork returns in the parent. (Not so the exit
				// event, which do_exit sends after waking the parent.)
				cmd := exec.Command(os.Args[0], "-test.run=^$")
				if err := cmd.Start(); err != nil {
					return err
				}
				defer cmd.Wait()
				child <- cmd.Process.Pid
			} else if err := peer.Multicast(groupMuxUnclaimed, connector.Message{ID: noiseID, Data: []byte("noise")}); err != nil {
				return err
			}
			return peer.SendTo(c.PortID(), connector.Message{ID: id, Seq: req.Seq, Ack: req.Seq + 1, Data: []byte("re")})
		}()
	}()

	before, mxBefore := c.Stats(), mx.Stats()
	m, _, err := connector.Call(ctxWait(t), c, connector.Message{ID: id, Seq: rand.Uint32()}, connector.ToPort(peer.PortID()), connector.MatchSeqAck, opts...)
	if perr := <-peerDone; perr != nil {
		t.Fatalf("peer: %v", perr)
	}
	if err != nil || string(m.Data) != "re" {
		t.Fatalf("Call: %+v, %v", m, err)
	}
	after := c.Stats()
	read, unclaimed := after.Messages-before.Messages, after.Unclaimed-before.Unclaimed

	mu.Lock()
	defer mu.Unlock()
	if withMux {
		if unclaimed != 0 {
			t.Errorf("%d messages counted unclaimed with the Mux as WithUnmatched handler", unclaimed)
		}
		if proc {
			if pid := <-child; !forks[uint32(pid)] && after.Overruns == before.Overruns {
				t.Errorf("the fork event of child %d did not reach the route (%d forks routed)", pid, len(forks))
			}
		} else if len(routed) != 1 || string(routed[0]) != "noise" {
			t.Errorf("the route got %q, want the one multicast", routed)
		}
		s := mx.Stats()
		if seen := s.Dispatched + s.Unrouted + s.Foreign - mxBefore.Dispatched - mxBefore.Unrouted - mxBefore.Foreign; seen != read-1 {
			t.Errorf("the call read %d messages besides its reply, the Mux saw %d", read-1, seen)
		}
		return
	}
	// Counted: everything the call read but its reply.
	if unclaimed < 1 || unclaimed != read-1 {
		t.Errorf("the call read %d messages and counted %d unclaimed, want %d (all but the reply) and at least 1", read, unclaimed, read-1)
	}
}

// cnmsgAck builds a cn_msg with seq and ack, its len the data's.
func cnmsgAck(id connector.CBID, seq, ack uint32, data []byte) []byte {
	b := binary.NativeEndian.AppendUint32(nil, id.Idx)
	b = binary.NativeEndian.AppendUint32(b, id.Val)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, ack)
	b = binary.NativeEndian.AppendUint16(b, uint16(len(data)))
	b = binary.NativeEndian.AppendUint16(b, 0)
	return append(b, data...)
}

// TestIntegrationExchangeLeftovers: a peer sends, in one datagram, three
// replies and an unrelated message. An Exchange that reads the socket
// itself and stops after the first reply claimed the other two, which are
// counted, and the unrelated one goes to the Mux's route, or is counted
// without WithUnmatched.
func TestIntegrationExchangeLeftovers(t *testing.T) {
	requirePrivileged(t)
	for _, withMux := range []bool{true, false} {
		t.Run(map[bool]string{true: "to the Mux", false: "counted"}[withMux], func(t *testing.T) {
			id, other := testID(), testID()
			c := dialServe(t, nil)
			peer := newRawPeer(t)
			seq := rand.Uint32()
			var dg []byte
			for _, m := range [][]byte{
				cnmsgAck(id, seq, seq+1, []byte("re:1")),
				cnmsgAck(other, 1, 0, []byte("note")),
				cnmsgAck(id, seq, seq+1, []byte("re:2")),
				cnmsgAck(id, seq, seq+1, []byte("re:3")),
			} {
				dg = append(dg, nlmsg(-1, m)...)
			}
			// Queued before the call: it is registered before it reads, so
			// it still finds them.
			peer.sendTo(t, c.PortID(), dg)
			mx := connector.NewMux()
			var notes []string
			mx.HandleFunc(other, func(r connector.Request) { notes = append(notes, string(r.Msg.Data)) })
			var opts []connector.CallOption
			if withMux {
				opts = append(opts, connector.WithUnmatched(mx))
			}
			var got []string
			err := connector.Exchange(ctxWait(t), c, connector.Message{ID: id, Seq: seq}, connector.ToPort(peer.port), connector.MatchSeqAck, func(m connector.Message, _ connector.Sender) bool {
				got = append(got, string(m.Data))
				return false
			}, opts...)
			if err != nil || len(got) != 1 || got[0] != "re:1" {
				t.Fatalf("Exchange: %v, replies %q", err, got)
			}
			s := c.Stats()
			if s.Messages != 4 {
				t.Fatalf("the Conn delivered %d messages, want the 4 of the datagram", s.Messages)
			}
			want := uint64(2) // re:2 and re:3, claimed but not seen
			if withMux {
				if len(notes) != 1 || notes[0] != "note" {
					t.Errorf("route got %q, want the note", notes)
				}
			} else {
				want++ // the note
			}
			if s.Unclaimed != want {
				t.Errorf("Stats.Unclaimed = %d, want %d", s.Unclaimed, want)
			}
		})
	}
}

// TestIntegrationCallDuplicateReply: a peer answers one request twice. The
// Call takes the first; the second reaches the Mux's route under Serve,
// whether it arrives while the call still waits or after.
func TestIntegrationCallDuplicateReply(t *testing.T) {
	requirePrivileged(t)
	id := testID()
	c := dialServe(t, nil)
	peer := dial(t, nil)
	mx := connector.NewMux()
	dups := make(chan string, 4)
	mx.HandleFunc(id, func(r connector.Request) { dups <- string(r.Msg.Data) })
	serveStarted(t, mx, c)
	const n = 20
	peerDone := make(chan error, 1)
	go func() {
		peerDone <- func() error {
			for range n {
				msgs, _, err := peer.Receive()
				if err != nil {
					return err
				}
				for _, m := range msgs {
					for _, d := range []string{"first", "again"} {
						if err := peer.SendTo(c.PortID(), connector.Message{ID: id, Seq: m.Seq, Ack: m.Seq + 1, Data: []byte(d)}); err != nil {
							return err
						}
					}
				}
			}
			return nil
		}()
	}()
	for i := range n {
		m, _, err := connector.Call(ctxWait(t), c, connector.Message{ID: id, Seq: uint32(i)}, connector.ToPort(peer.PortID()), connector.MatchSeqAck)
		if err != nil || string(m.Data) != "first" {
			t.Fatalf("call %d: %+v, %v", i, m, err)
		}
		select {
		case d := <-dups:
			if d != "again" {
				t.Fatalf("call %d: the route got %q", i, d)
			}
		case <-ctxWait(t).Done():
			t.Fatalf("call %d: the duplicate never reached the route (Mux %+v)", i, mx.Stats())
		}
	}
	if err := <-peerDone; err != nil {
		t.Fatal(err)
	}
	if s := mx.Stats(); s.Claimed != n || s.Dispatched != n || c.Stats().Unclaimed != 0 {
		t.Errorf("Mux %+v, Conn %+v: want %d claimed and %d dispatched, none unclaimed", s, c.Stats(), n, n)
	}
}
