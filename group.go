package connector

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"syscall"
)

// A Group is a connector multicast group number, 1 to 32. Kernel agents send on
// the group whose number is their id's Idx (group 1 carries process events).
//
// Two different encodings exist in the socket API and must never be confused:
// joining a group with setsockopt(NETLINK_ADD_MEMBERSHIP) takes the group
// number, while bind(2) and the source address of a received multicast carry a
// bitmask with bit g-1 set for group g. Group is always the number; use Mask to
// get the bit.
type Group uint32

// MaxGroup is the highest group number the connector socket supports. The
// connector asks for 26 groups, and the netlink core raises any family's count
// to at least 32 (net/netlink/af_netlink.c, netlink_kernel_create).
const MaxGroup Group = 32

// Valid reports whether g is a usable group number (1 to 32).
func (g Group) Valid() bool { return g >= 1 && g <= MaxGroup }

// Mask returns the bind(2)/sockaddr_nl bitmask for g (bit g-1), or 0 when g is
// not a valid group number.
func (g Group) Mask() uint32 {
	if !g.Valid() {
		return 0
	}
	return 1 << (g - 1)
}

// Kernel reports whether g is one of the groups reserved for kernel agents by
// include/uapi/linux/connector.h (1 to CN_NETLINK_USERS-1 = 10). On these groups
// a Conn drops messages from userspace senders unless
// [Config.Senders] is SendersAny.
func (g Group) Kernel() bool { return g >= 1 && uint32(g) < NetlinkUsers }

// String returns the group number in decimal.
func (g Group) String() string { return strconv.FormatUint(uint64(g), 10) }

func (g Group) check() error {
	if !g.Valid() {
		return fmt.Errorf("%w: %d is out of range: connector groups are numbered 1 to %d", ErrInvalidGroup, uint32(g), MaxGroup)
	}
	return nil
}

// GroupMask returns the bind(2) bitmask for the given group numbers. It fails
// if any of them is out of range.
func GroupMask(groups ...Group) (uint32, error) {
	var m uint32
	for _, g := range groups {
		if err := g.check(); err != nil {
			return 0, err
		}
		m |= g.Mask()
	}
	return m, nil
}

// GroupsFromMask returns the group numbers whose bits are set in mask, in
// increasing order.
func GroupsFromMask(mask uint32) []Group {
	var gs []Group
	for g := Group(1); g <= MaxGroup; g++ {
		if mask&g.Mask() != 0 {
			gs = append(gs, g)
		}
	}
	return gs
}

// groupFromMask returns the lowest group set in mask, or 0. A received
// multicast's source address carries exactly one bit.
func groupFromMask(mask uint32) Group {
	if mask == 0 {
		return 0
	}
	return Group(bits.TrailingZeros32(mask) + 1)
}

// JoinGroup joins multicast group g (setsockopt NETLINK_ADD_MEMBERSHIP with
// the group number). Who may join which group is in the package
// documentation (Privileges); a refusal matches os.ErrPermission.
func (c *Conn) JoinGroup(g Group) error {
	if err := c.checkOpen("join group"); err != nil {
		return err
	}
	if err := g.check(); err != nil {
		return opErr("join group", err)
	}
	err := c.t.Join(uint32(g))
	if errors.Is(err, syscall.EPERM) {
		return &OpError{Op: "join group", Err: fmt.Errorf("joining group %d %s: %w", uint32(g), joinNeeds, err)}
	}
	return opErr("join group", c.mapErr(err, "join group"))
}

// LeaveGroup leaves multicast group g.
func (c *Conn) LeaveGroup(g Group) error {
	if err := c.checkOpen("leave group"); err != nil {
		return err
	}
	if err := g.check(); err != nil {
		return opErr("leave group", err)
	}
	return opErr("leave group", c.mapErr(c.t.Leave(uint32(g)), "leave group"))
}

// Groups returns the groups the socket is a member of
// (NETLINK_LIST_MEMBERSHIPS).
func (c *Conn) Groups() ([]Group, error) {
	if err := c.checkOpen("list groups"); err != nil {
		return nil, err
	}
	m, err := c.t.Memberships()
	if err != nil {
		return nil, opErr("list groups", c.mapErr(err, "list groups"))
	}
	return GroupsFromMask(m), nil
}
