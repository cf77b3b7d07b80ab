package connector

import "strconv"

// A CBID is a connector callback id (struct cb_id in include/uapi/linux/connector.h).
// A kernel agent registers a callback for an id, and the kernel multicasts that
// agent's messages to the group whose number is the id's Idx.
type CBID struct {
	Idx uint32
	Val uint32
}

// Callback ids registered in include/uapi/linux/connector.h. The kernel versions
// are approximate where marked "about"; the values themselves have never changed.
var (
	// IDProc is the process events connector, drivers/connector/cn_proc.c
	// (CN_IDX_PROC/CN_VAL_PROC, since Linux 2.6.15). See package proc.
	IDProc = CBID{Idx: 0x1, Val: 0x1}
	// IDCIFS was reserved for CIFS (CN_IDX_CIFS/CN_VAL_CIFS); it has no in-tree user.
	IDCIFS = CBID{Idx: 0x2, Val: 0x1}
	// IDW1 is the 1-Wire subsystem, drivers/w1/w1_netlink.c (CN_W1_IDX/CN_W1_VAL).
	IDW1 = CBID{Idx: 0x3, Val: 0x1}
	// IDV86D is the uvesafb framebuffer talking to its v86d helper
	// (CN_IDX_V86D/CN_VAL_V86D_UVESAFB).
	IDV86D = CBID{Idx: 0x4, Val: 0x1}
	// IDDST was the distributed storage staging driver (CN_DST_IDX/CN_DST_VAL), since removed.
	IDDST = CBID{Idx: 0x6, Val: 0x1}
	// IDDM is dm-log-userspace, drivers/md/dm-log-userspace-transfer.c
	// (CN_IDX_DM/CN_VAL_DM_USERSPACE_LOG).
	IDDM = CBID{Idx: 0x7, Val: 0x1}
	// IDDRBD was DRBD 8.3's configuration interface (CN_IDX_DRBD/CN_VAL_DRBD).
	IDDRBD = CBID{Idx: 0x8, Val: 0x1}
	// IDKVP is the Hyper-V key/value pair daemon's legacy transport (CN_KVP_IDX/CN_KVP_VAL).
	IDKVP = CBID{Idx: 0x9, Val: 0x1}
	// IDVSS is the Hyper-V volume shadow copy daemon's legacy transport
	// (CN_VSS_IDX/CN_VSS_VAL, about Linux 3.10).
	IDVSS = CBID{Idx: 0xA, Val: 0x1}
)

const (
	// IdxBlackBoard is CN_IDX_BB, reserved for the out-of-tree BlackBoard (TSP)
	// sampling framework. The header defines no value for it.
	IdxBlackBoard uint32 = 0x5

	// NetlinkUsers is CN_NETLINK_USERS: one more than the highest index that
	// connector.h reserves (11 since the VSS id was added). Indexes from here on
	// are free for other agents and for userspace-to-userspace traffic.
	NetlinkUsers uint32 = 11
)

// Group returns the multicast group on which the kernel sends this id's messages:
// the group number equals Idx. The result is only a valid group for Idx 1 to 32.
func (id CBID) Group() Group { return Group(id.Idx) }

// Name returns the short name of a registered id ("proc", "w1", ...) and false
// for ids that connector.h does not register.
func (id CBID) Name() (string, bool) {
	for _, k := range knownIDs {
		if k.id == id {
			return k.name, true
		}
	}
	if id.Idx == IdxBlackBoard {
		return "bb", true
	}
	return "", false
}

// String returns the id's name for registered ids ("proc") and "idx:val"
// (decimal) for all others.
func (id CBID) String() string {
	if n, ok := id.Name(); ok {
		return n
	}
	b := make([]byte, 0, 24)
	b = strconv.AppendUint(b, uint64(id.Idx), 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, uint64(id.Val), 10)
	return string(b)
}

var knownIDs = [...]struct {
	id   CBID
	name string
}{
	{IDProc, "proc"},
	{IDCIFS, "cifs"},
	{IDW1, "w1"},
	{IDV86D, "v86d"},
	{IDDST, "dst"},
	{IDDM, "dm-log-userspace"},
	{IDDRBD, "drbd"},
	{IDKVP, "hv-kvp"},
	{IDVSS, "hv-vss"},
}
