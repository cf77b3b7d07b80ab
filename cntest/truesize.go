package cntest

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/cnlink/connector"
)

// The receive buffer accounting of a netlink socket: each queued datagram
// is charged its sk_buff's truesize against the receive buffer
// (sk_rmem_alloc against sk_rcvbuf), and truesize is what the allocator
// really gave the datagram, not its length. The facts below are Linux's on
// x86_64 (the fake models that architecture on every GOARCH); cntest's
// kernel_linux_test.go checks them against the running kernel by filling a
// real socket with datagrams of several sizes.
const (
	// skbDataAlign is SMP_CACHE_BYTES on x86_64: SKB_DATA_ALIGN rounds up
	// to it (include/linux/skbuff.h).
	skbDataAlign = 64
	// skbOverhead is SKB_DATA_ALIGN(sizeof(struct sk_buff)): the sk_buff
	// itself, 232 bytes on x86_64, rounded up (include/linux/skbuff.h,
	// SKB_TRUESIZE; Linux 6.1 to 7.3).
	skbOverhead = 256
	// shinfoSize is SKB_DATA_ALIGN(sizeof(struct skb_shared_info)), 320
	// bytes with MAX_SKB_FRAGS 17 (include/linux/skbuff.h): kept at the end
	// of every head allocation.
	shinfoSize = 320
	// DefaultSmallHeadCache is the default of Options.SmallHeadCache:
	// SKB_SMALL_HEAD_CACHE_SIZE of Debian's x86_64 kernels (6.12, 6.18,
	// 7.3), measured in the kernel matrix (a 76-byte datagram's truesize is
	// 960 there).
	DefaultSmallHeadCache = 704
	// nlmsgGoodSize is NLMSG_GOODSIZE, SKB_WITH_OVERHEAD(PAGE_SIZE) with
	// 4 KiB pages (include/linux/netlink.h): a userspace unicast longer
	// than this gets a vmalloc'ed head (netlink_alloc_large_skb in
	// net/netlink/af_netlink.c).
	nlmsgGoodSize = 4096 - shinfoSize
	// kmallocMaxCacheSize is KMALLOC_MAX_CACHE_SIZE with SLUB and 4 KiB
	// pages (include/linux/slab.h): larger kmallocs take whole pages.
	kmallocMaxCacheSize = 8192
	pageSize            = 4096

	// procEventLen is the length of a process event's datagram (netlink
	// header, cn_msg and a 40-byte struct proc_event): Options.QueueLen
	// counts in their truesize.
	procEventLen = 76
)

// kmallocSize is kmalloc_size_roundup (mm/slab_common.c) for the sizes a
// datagram's head can have (at least 384 bytes): the power-of-two kmalloc
// caches up to KMALLOC_MAX_CACHE_SIZE, whole pages in a power-of-two order
// above it.
func kmallocSize(n int) int {
	if n > kmallocMaxCacheSize {
		p := pageSize
		for p < n {
			p <<= 1
		}
		return p
	}
	c := 8
	for c < n {
		if c == 64 && n <= 96 {
			return 96
		}
		if c == 128 && n <= 192 {
			return 192
		}
		c <<= 1
	}
	return c
}

func skbDataAlignUp(n int) int { return (n + skbDataAlign - 1) &^ (skbDataAlign - 1) }

// trueSize is the truesize of the sk_buff holding a datagram of n bytes
// (the netlink header included), as queued on the receiving socket, on a
// kernel whose small-head cache holds smallHead bytes (0: none, before
// Linux 6.3).
//
// Every datagram's buffer is allocated by alloc_skb(n) (the kernel's
// cn_netlink_send_mult through nlmsg_new, a userspace multicast through
// netlink_alloc_large_skb in net/netlink/af_netlink.c), except a userspace
// unicast longer than NLMSG_GOODSIZE, whose head is vmalloc'ed at exactly
// SKB_DATA_ALIGN(n) + SKB_DATA_ALIGN(sizeof(struct skb_shared_info)) bytes.
// alloc_skb asks kmalloc_reserve for SKB_HEAD_ALIGN(n) bytes and gets a
// whole allocator object: the small-head cache's (SKB_SMALL_HEAD_CACHE_SIZE
// bytes) when the request fits it, since Linux 6.3, or else a kmalloc size
// class; __build_skb_around then sets truesize to SKB_TRUESIZE(object -
// shared info), which is the object plus the sk_buff (net/core/skbuff.c,
// include/linux/skbuff.h; Linux 6.1, 6.12, 6.18). netlink_trim, which could
// shrink a head before a broadcast, acts only when more than half the
// truesize is unused tail room, which these sizes never leave.
func trueSize(n int, userUnicast bool, smallHead int) int {
	data := skbDataAlignUp(n)
	if userUnicast && n > nlmsgGoodSize {
		return data + shinfoSize + skbOverhead
	}
	obj := data + shinfoSize
	if obj <= smallHead {
		return smallHead + skbOverhead
	}
	return kmallocSize(obj) + skbOverhead
}

// TrueSize returns what the fake charges against a socket's receive buffer
// for a queued datagram of n bytes (netlink header included): the truesize
// the modelled kernel gives it ([Options.Release],
// [Options.SmallHeadCache]). userUnicast is for a datagram sent by a
// userspace socket to a port, whose head above 3776 bytes is vmalloc'ed and
// charged tighter; messages from the kernel and multicasts are charged
// alike.
func (k *Kernel) TrueSize(n int, userUnicast bool) int {
	return trueSize(n, userUnicast, k.smallHead)
}

// parseRelease returns the major and minor version of a kernel release
// string such as "6.1" or "6.12.48+deb13-amd64"; "" means the newest model
// (7.3).
func parseRelease(r string) (major, minor int, err error) {
	if r == "" {
		return 7, 3, nil
	}
	a, rest, ok := strings.Cut(r, ".")
	b := rest
	if i := strings.IndexFunc(rest, func(c rune) bool { return c < '0' || c > '9' }); i >= 0 {
		b = rest[:i]
	}
	major, err1 := strconv.Atoi(a)
	minor, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || major < 0 || minor < 0 {
		return 0, 0, fmt.Errorf("cntest: dial: %w: Options.Release is %q; want a kernel release such as \"6.12\" or \"6.1.0-40-amd64\"", connector.ErrInvalidConfig, r)
	}
	return major, minor, nil
}
