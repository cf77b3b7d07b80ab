package connector_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/testutil"
	"github.com/google/go-cmp/cmp"
)

func TestGroupNumbersAndMasks(t *testing.T) {
	for g := connector.Group(0); g <= 40; g++ {
		valid := g >= 1 && g <= 32
		if g.Valid() != valid {
			t.Errorf("Group(%d).Valid() = %v", g, g.Valid())
		}
		var want uint32
		if valid {
			want = 1 << (g - 1)
		}
		if m := g.Mask(); m != want {
			t.Errorf("Group(%d).Mask() = %#x, want %#x", g, m, want)
		}
		if k := g.Kernel(); k != (g >= 1 && g <= 10) {
			t.Errorf("Group(%d).Kernel() = %v", g, k)
		}
		if valid {
			// Number and mask coincide only for groups 1 and 2, which
			// hides mix-ups; check the round trip for every group.
			if got := connector.GroupsFromMask(g.Mask()); len(got) != 1 || got[0] != g {
				t.Errorf("GroupsFromMask(Group(%d).Mask()) = %v", g, got)
			}
		}
	}
	if s := connector.Group(27).String(); s != "27" {
		t.Errorf("String = %q", s)
	}
	if connector.MaxGroup != 32 {
		t.Errorf("MaxGroup = %d, want 32", connector.MaxGroup)
	}
}

func TestGroupMask(t *testing.T) {
	tests := []struct {
		groups []connector.Group
		want   uint32
	}{
		{nil, 0},
		{[]connector.Group{1}, 0x1},
		{[]connector.Group{3}, 0x4}, // not 0x3
		{[]connector.Group{1, 2}, 0x3},
		{[]connector.Group{32}, 0x80000000},
		{[]connector.Group{20, 20}, 1 << 19},
		{[]connector.Group{1, 10, 11, 32}, 1 | 1<<9 | 1<<10 | 1<<31},
	}
	for _, tt := range tests {
		got, err := connector.GroupMask(tt.groups...)
		if err != nil || got != tt.want {
			t.Errorf("GroupMask(%v) = %#x, %v; want %#x", tt.groups, got, err, tt.want)
		}
	}
	for _, bad := range [][]connector.Group{{0}, {33}, {1, 33}, {0xffffffff}} {
		m, err := connector.GroupMask(bad...)
		if m != 0 || !errors.Is(err, connector.ErrInvalidGroup) || !strings.Contains(err.Error(), "1 to 32") {
			t.Errorf("GroupMask(%v) = %#x, %v; want ErrInvalidGroup naming the range", bad, m, err)
		}
	}
}

func TestGroupsFromMask(t *testing.T) {
	tests := []struct {
		mask uint32
		want []connector.Group
	}{
		{0, nil},
		{0x1, []connector.Group{1}},
		{0x3, []connector.Group{1, 2}},
		{0x80000001, []connector.Group{1, 32}},
		{1 << 19, []connector.Group{20}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, connector.GroupsFromMask(tt.mask)); diff != "" {
			t.Errorf("GroupsFromMask(%#x) (-want +got):\n%s", tt.mask, diff)
		}
	}
	all := connector.GroupsFromMask(0xffffffff)
	if len(all) != 32 || all[0] != 1 || all[31] != 32 {
		t.Errorf("GroupsFromMask(all ones) = %v", all)
	}
}

// TestSenderGroupIsANumber sends on every group and checks that receivers
// see the group number, not the source address's bitmask.
func TestSenderGroupIsANumber(t *testing.T) {
	k := cntest.New(nil)
	all := make([]connector.Group, 0, 32)
	for g := connector.Group(1); g <= connector.MaxGroup; g++ {
		all = append(all, g)
	}
	rx := dialFake(t, k, &connector.Config{Groups: all, Senders: connector.SendersAny})
	tx := dialFake(t, k, nil)
	for _, g := range all {
		if err := tx.Multicast(g, connector.Message{ID: connector.CBID{Idx: uint32(g)}}); err != nil {
			t.Fatal(err)
		}
		msgs, from := receiveFake(t, rx)
		if from.Group != g || from.Port != tx.PortID() || msgs[0].ID.Idx != uint32(g) {
			t.Errorf("multicast on group %d arrived as from %+v", g, from)
		}
		if _, err := k.Multicast(g, connector.Message{}); err != nil {
			t.Fatal(err)
		}
		if _, from := receiveFake(t, rx); from != (connector.Sender{Group: g}) {
			t.Errorf("kernel multicast on group %d arrived as from %+v", g, from)
		}
	}
}

func TestJoinLeaveGroups(t *testing.T) {
	k := cntest.New(nil)
	c := dialFake(t, k, &connector.Config{Groups: []connector.Group{1, 20}})
	groups := func() []connector.Group {
		t.Helper()
		gs, err := c.Groups()
		if err != nil {
			t.Fatal(err)
		}
		return gs
	}
	if diff := cmp.Diff([]connector.Group{1, 20}, groups()); diff != "" {
		t.Errorf("groups after Dial (-want +got):\n%s", diff)
	}
	if err := c.JoinGroup(32); err != nil {
		t.Fatal(err)
	}
	if err := c.LeaveGroup(1); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]connector.Group{20, 32}, groups()); diff != "" {
		t.Errorf("groups after join 32, leave 1 (-want +got):\n%s", diff)
	}
	if n, _ := k.Multicast(1, connector.Message{}); n != 0 {
		t.Error("a multicast on a group the Conn left was delivered")
	}
	if n, _ := k.Multicast(32, connector.Message{}); n != 1 {
		t.Error("a multicast on a joined group was not delivered")
	}
	for _, g := range []connector.Group{0, 33} {
		if err := c.JoinGroup(g); !errors.Is(err, connector.ErrInvalidGroup) {
			t.Errorf("JoinGroup(%d) = %v, want ErrInvalidGroup", g, err)
		}
		if err := c.LeaveGroup(g); !errors.Is(err, connector.ErrInvalidGroup) {
			t.Errorf("LeaveGroup(%d) = %v, want ErrInvalidGroup", g, err)
		}
	}
	var oe *connector.OpError
	if err := c.JoinGroup(0); !errors.As(err, &oe) || oe.Op != "join group" {
		t.Errorf("JoinGroup(0) error %v does not name the operation", err)
	}
}

// TestDialRefusedGroupsNamed: a Dial whose join the kernel refuses
// (EPERM without CAP_NET_ADMIN) names the groups it asked for and which of
// them are even-numbered, as JoinGroup names its one group.
func TestDialRefusedGroupsNamed(t *testing.T) {
	k := cntest.New(nil)
	for _, tt := range []struct {
		groups []connector.Group
		want   []string
	}{
		{[]connector.Group{21, 22, 24}, []string{"groups 21, 22 and 24 (Config.Groups; 22 and 24 are even-numbered)", "CAP_NET_ADMIN"}},
		{[]connector.Group{2}, []string{"group 2 (Config.Groups; 2 is even-numbered)", "CAP_NET_ADMIN"}},
		{[]connector.Group{1, 4}, []string{"groups 1 and 4 (Config.Groups; 4 is even-numbered)"}},
	} {
		c, err := k.DialUnprivileged(&connector.Config{Groups: tt.groups})
		if err == nil {
			_ = c.Close()
			t.Errorf("DialUnprivileged(%v) succeeded", tt.groups)
			continue
		}
		errorsIsAll(t, err, os.ErrPermission)
		mustContain(t, err, tt.want...)
		testutil.CheckErrorShape(t, "Dial", err, "connector")
	}
	// So do a unicast and a multicast refused for the same reason: they
	// name the port and the group.
	u, err := k.DialUnprivileged(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	peer := dialFake(t, k, nil)
	for what, tt := range map[string]struct {
		err  error
		want string
	}{
		"SendTo":    {u.SendTo(peer.PortID(), connector.Message{ID: idA}), fmt.Sprintf("sending to userspace port %d needs CAP_NET_ADMIN", peer.PortID())},
		"Multicast": {u.Multicast(22, connector.Message{ID: idA}), "multicasting on group 22 needs CAP_NET_ADMIN"},
	} {
		errorsIsAll(t, tt.err, os.ErrPermission)
		mustContain(t, tt.err, tt.want)
		testutil.CheckErrorShape(t, what, tt.err, "connector")
	}
	// JoinGroup names its group the same way.
	c, err := k.DialUnprivileged(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.JoinGroup(22)
	errorsIsAll(t, err, os.ErrPermission)
	mustContain(t, err, "group 22", "CAP_NET_ADMIN")
}
