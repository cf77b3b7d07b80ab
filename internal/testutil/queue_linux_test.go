package testutil

import (
	"errors"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"golang.org/x/sys/unix"
)

// TestQueueEmptyKeepsOverrun: QueueEmpty tells a full queue from an empty
// one and leaves a pending overrun report (ENOBUFS) to the socket's reader,
// which a peek with recvfrom(MSG_PEEK) takes away (sock_error clears
// sk_err): the next Receive still fails with ErrOverrun.
func TestQueueEmptyKeepsOverrun(t *testing.T) {
	RequireInitialNetNS(t)
	RequireCapability(t, unix.CAP_NET_ADMIN, "CAP_NET_ADMIN")
	rx, tx := Pair(t, connector.Dial, nil)
	g := JoinQuietGroup(t, rx) // its 200 multicasts must not crowd another test's receiver
	if err := rx.SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if !QueueEmpty(t, rx) {
		t.Fatal("a new socket's queue is not empty")
	}
	for i := range 200 {
		if err := tx.Multicast(g, connector.Message{ID: connector.CBID{Idx: 0x7e57, Val: 31}, Seq: uint32(i), Data: make([]byte, 64)}); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if QueueEmpty(t, rx) {
			t.Fatal("QueueEmpty after 200 multicasts into a 4 KiB buffer")
		}
	}
	if err := rx.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := rx.Receive(); !errors.Is(err, connector.ErrOverrun) {
		t.Fatalf("first Receive after the overrun and QueueEmpty: %v, want ErrOverrun", err)
	}
	for !QueueEmpty(t, rx) {
		if _, _, err := rx.Receive(); err != nil && !errors.Is(err, connector.ErrOverrun) {
			t.Fatal(err)
		}
	}
}

// TestQuietGroupSkipsJoined: QuietGroup never returns a group a socket has
// joined, and returns a userspace group (12 to 32).
func TestQuietGroupSkipsJoined(t *testing.T) {
	RequireInitialNetNS(t)
	RequireCapability(t, unix.CAP_NET_ADMIN, "CAP_NET_ADMIN")
	first := QuietGroup(t)
	c, err := connector.Dial(&connector.Config{Groups: []connector.Group{first}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Joins a second quiet group too: two bits of the mask are read.
	second := QuietGroup(t)
	if second == first {
		t.Fatalf("QuietGroup returned group %d, which this test's socket has joined", first)
	}
	if err := c.JoinGroup(second); err != nil {
		t.Fatal(err)
	}
	for range 200 {
		g := QuietGroup(t)
		if g == first || g == second {
			t.Fatalf("QuietGroup returned group %d, which this test's socket has joined (groups %d and %d)", g, first, second)
		}
		if g < 12 || g > 32 {
			t.Fatalf("QuietGroup returned group %d, outside 12 to 32", g)
		}
	}
}

// TestJoinQuietGroup: JoinQuietGroup joins a group no other socket has,
// and leaves c its only member; a second socket gets another group.
func TestJoinQuietGroup(t *testing.T) {
	RequireInitialNetNS(t)
	RequireCapability(t, unix.CAP_NET_ADMIN, "CAP_NET_ADMIN")
	a := Dial(t, connector.Dial, nil)
	b := Dial(t, connector.Dial, nil)
	ga := JoinQuietGroup(t, a)
	gb := JoinQuietGroup(t, b)
	if ga == gb {
		t.Fatalf("both sockets got group %d", ga)
	}
	for _, c := range []struct {
		conn *connector.Conn
		g    connector.Group
	}{{a, ga}, {b, gb}} {
		gs, err := c.conn.Groups()
		if err != nil {
			t.Fatal(err)
		}
		if len(gs) != 1 || gs[0] != c.g {
			t.Errorf("port %d: groups %v, want only the quiet group %d", c.conn.PortID(), gs, c.g)
		}
		for port, mask := range groupMasks(t) {
			if mask&(1<<(c.g-1)) != 0 && port != c.conn.PortID() {
				t.Errorf("quiet group %d of port %d has another member, port %d", c.g, c.conn.PortID(), port)
			}
		}
	}
}
