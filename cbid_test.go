package connector_test

import (
	"testing"

	"github.com/cnlink/connector"
)

func TestCBIDNames(t *testing.T) {
	// Every id in include/uapi/linux/connector.h, with its group.
	tests := []struct {
		id    connector.CBID
		name  string
		group connector.Group
	}{
		{connector.IDProc, "proc", 1},
		{connector.IDCIFS, "cifs", 2},
		{connector.IDW1, "w1", 3},
		{connector.IDV86D, "v86d", 4},
		{connector.CBID{Idx: connector.IdxBlackBoard, Val: 0}, "bb", 5},
		{connector.CBID{Idx: connector.IdxBlackBoard, Val: 7}, "bb", 5},
		{connector.IDDST, "dst", 6},
		{connector.IDDM, "dm-log-userspace", 7},
		{connector.IDDRBD, "drbd", 8},
		{connector.IDKVP, "hv-kvp", 9},
		{connector.IDVSS, "hv-vss", 10},
	}
	seen := map[connector.CBID]bool{}
	for _, tt := range tests {
		name, ok := tt.id.Name()
		if !ok || name != tt.name {
			t.Errorf("%#v.Name() = %q, %v; want %q, true", tt.id, name, ok, tt.name)
		}
		if s := tt.id.String(); s != tt.name {
			t.Errorf("%#v.String() = %q, want %q", tt.id, s, tt.name)
		}
		if g := tt.id.Group(); g != tt.group || !g.Kernel() {
			t.Errorf("%#v.Group() = %d (kernel %v), want kernel group %d", tt.id, g, g.Kernel(), tt.group)
		}
		if tt.id.Idx != connector.IdxBlackBoard && seen[tt.id] {
			t.Errorf("%#v listed twice", tt.id)
		}
		seen[tt.id] = true
	}
	// The values are the uapi header's, not just distinct.
	if connector.IDProc != (connector.CBID{Idx: 1, Val: 1}) || connector.IDVSS != (connector.CBID{Idx: 10, Val: 1}) {
		t.Errorf("IDProc = %v, IDVSS = %v; connector.h says 1:1 and 10:1", connector.IDProc, connector.IDVSS)
	}
	if connector.NetlinkUsers != 11 {
		t.Errorf("NetlinkUsers = %d, want CN_NETLINK_USERS = 11", connector.NetlinkUsers)
	}
}

func TestCBIDUnknown(t *testing.T) {
	tests := []struct {
		id   connector.CBID
		want string
	}{
		{connector.CBID{}, "0:0"},
		{connector.CBID{Idx: 1, Val: 2}, "1:2"}, // right idx, wrong val
		{connector.CBID{Idx: 2, Val: 0}, "2:0"},
		{connector.CBID{Idx: 14, Val: 0x456}, "14:1110"}, // samples/connector/cn_test.c
		{connector.CBID{Idx: 0xffffffff, Val: 0xffffffff}, "4294967295:4294967295"},
	}
	for _, tt := range tests {
		if name, ok := tt.id.Name(); ok || name != "" {
			t.Errorf("%#v.Name() = %q, %v; want an unknown id", tt.id, name, ok)
		}
		if s := tt.id.String(); s != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.id, s, tt.want)
		}
	}
	if g := (connector.CBID{Idx: 40, Val: 1}).Group(); g.Valid() {
		t.Errorf("idx 40 gives group %d, which claims to be valid", g)
	}
}
