package proc

// Kernel ABI of the process events connector, defined here because neither
// the standard library nor golang.org/x/sys carries it. Source:
// include/uapi/linux/cn_proc.h; the kernel versions say when each item
// appeared upstream.

// Multicast operations (enum proc_cn_mcast_op), sent as the 4-byte payload
// of a subscription request since Linux 2.6.15, or as the first field of
// struct proc_input since Linux 6.6.
const (
	opListen uint32 = 1 // PROC_CN_MCAST_LISTEN
	opIgnore uint32 = 2 // PROC_CN_MCAST_IGNORE
	// opInvalid is no operation: the kernel answers it with EINVAL (or
	// EPERM before 6.6 without CAP_NET_ADMIN) and changes no count.
	opInvalid uint32 = 3
)

// Sizes of kernel structures, in bytes.
const (
	// procInputLen is sizeof(struct proc_input) {u32 mcast_op; u32
	// event_type}, the event-filter request added in Linux 6.6. Older
	// kernels silently ignore a request of this size.
	procInputLen = 8
	// mcastOpLen is the size of the classic request: a bare
	// enum proc_cn_mcast_op.
	mcastOpLen = 4

	// headerLen is the fixed head of struct proc_event: u32 what, u32 cpu,
	// u64 timestamp_ns. The event_data union follows it.
	headerLen = 16
	// eventLen is sizeof(struct proc_event) since Linux 3.2, when the comm
	// event's 16-byte name made the union 24 bytes. Before that it was 32.
	eventLen = 40
)

// Offsets inside struct proc_event (relative to the cn_msg payload).
const (
	offWhat      = 0
	offCPU       = 4
	offTimestamp = 8
	offData      = 16 // union event_data
)

// commLen is TASK_COMM_LEN, the size of the comm event's name field.
const commLen = 16
