//go:build linux

package connector

import (
	"testing"
	"unsafe"

	"github.com/cnlink/connector/internal/cabi"
	"golang.org/x/sys/unix"
)

// goField is a Go struct field's offset and size, for comparison with the C
// layout of the kernel struct it mirrors.
type goField struct {
	name         string
	offset, size uintptr
}

// checkLayout compares a Go struct (its size and fields, in C order) with the
// C layout of the kernel struct it is passed to, on the GOARCH under test.
func checkLayout(t *testing.T, name string, goSize uintptr, gf []goField, cf []cabi.Field) {
	t.Helper()
	c := cabi.Struct(cf...)
	if goSize != c.Type.Size {
		t.Errorf("%s: Go size %d, C size %d", name, goSize, c.Type.Size)
	}
	if len(gf) != len(cf) {
		t.Fatalf("%s: %d Go fields against %d C fields", name, len(gf), len(cf))
	}
	for i := range gf {
		if gf[i].offset != c.Offsets[i] || gf[i].size != cf[i].Type.Size {
			t.Errorf("%s.%s: Go offset %d size %d, C (%s) offset %d size %d",
				name, gf[i].name, gf[i].offset, gf[i].size, cf[i].Name, c.Offsets[i], cf[i].Type.Size)
		}
	}
}

// msghdrC is struct user_msghdr (include/linux/socket.h), what recvmmsg
// reads; a 32-bit process on a 64-bit kernel passes struct compat_msghdr,
// which has the same 32-bit layout.
var msghdrC = []cabi.Field{
	{Name: "msg_name", Type: cabi.Ptr}, {Name: "msg_namelen", Type: cabi.U32}, {Name: "msg_iov", Type: cabi.Ptr},
	{Name: "msg_iovlen", Type: cabi.Size}, {Name: "msg_control", Type: cabi.Ptr}, {Name: "msg_controllen", Type: cabi.Size},
	{Name: "msg_flags", Type: cabi.U32},
}

// TestKernelStructLayouts checks every struct this package hands to the
// kernel, by size and field offsets, against the C layout for this GOARCH.
// CI runs it under GOARCH=386 as well as natively; the compile-time checks
// in conn_linux.go cover mmsghdr on every GOARCH that builds.
func TestKernelStructLayouts(t *testing.T) {
	var mh unix.Msghdr
	checkLayout(t, "msghdr", unsafe.Sizeof(mh), []goField{
		{"Name", unsafe.Offsetof(mh.Name), unsafe.Sizeof(mh.Name)},
		{"Namelen", unsafe.Offsetof(mh.Namelen), unsafe.Sizeof(mh.Namelen)},
		{"Iov", unsafe.Offsetof(mh.Iov), unsafe.Sizeof(mh.Iov)},
		{"Iovlen", unsafe.Offsetof(mh.Iovlen), unsafe.Sizeof(mh.Iovlen)},
		{"Control", unsafe.Offsetof(mh.Control), unsafe.Sizeof(mh.Control)},
		{"Controllen", unsafe.Offsetof(mh.Controllen), unsafe.Sizeof(mh.Controllen)},
		{"Flags", unsafe.Offsetof(mh.Flags), unsafe.Sizeof(mh.Flags)},
	}, msghdrC)

	// struct mmsghdr (include/linux/socket.h): a user_msghdr and msg_len.
	var mm mmsghdr
	checkLayout(t, "mmsghdr", unsafe.Sizeof(mm), []goField{
		{"Hdr", unsafe.Offsetof(mm.Hdr), unsafe.Sizeof(mm.Hdr)},
		{"Len", unsafe.Offsetof(mm.Len), unsafe.Sizeof(mm.Len)},
	}, []cabi.Field{{Name: "msg_hdr", Type: cabi.Struct(msghdrC...).Type}, {Name: "msg_len", Type: cabi.U32}})
	// recvmmsg indexes an array of them: the i-th entry must start where
	// the kernel looks for it.
	arr := make([]mmsghdr, 3)
	if got, want := uintptr(unsafe.Pointer(&arr[2]))-uintptr(unsafe.Pointer(&arr[0])), 2*cabi.Struct(cabi.Field{Name: "msg_hdr", Type: cabi.Struct(msghdrC...).Type}, cabi.Field{Name: "msg_len", Type: cabi.U32}).Type.Size; got != want {
		t.Errorf("mmsghdr array: entry 2 at offset %d, the kernel reads it at %d", got, want)
	}

	// struct iovec (include/uapi/linux/uio.h).
	var iov unix.Iovec
	checkLayout(t, "iovec", unsafe.Sizeof(iov), []goField{
		{"Base", unsafe.Offsetof(iov.Base), unsafe.Sizeof(iov.Base)},
		{"Len", unsafe.Offsetof(iov.Len), unsafe.Sizeof(iov.Len)},
	}, []cabi.Field{{Name: "iov_base", Type: cabi.Ptr}, {Name: "iov_len", Type: cabi.Size}})

	// struct sockaddr_nl (include/uapi/linux/netlink.h).
	var sa unix.RawSockaddrNetlink
	checkLayout(t, "sockaddr_nl", unsafe.Sizeof(sa), []goField{
		{"Family", unsafe.Offsetof(sa.Family), unsafe.Sizeof(sa.Family)},
		{"Pad", unsafe.Offsetof(sa.Pad), unsafe.Sizeof(sa.Pad)},
		{"Pid", unsafe.Offsetof(sa.Pid), unsafe.Sizeof(sa.Pid)},
		{"Groups", unsafe.Offsetof(sa.Groups), unsafe.Sizeof(sa.Groups)},
	}, []cabi.Field{{Name: "nl_family", Type: cabi.U16}, {Name: "nl_pad", Type: cabi.U16}, {Name: "nl_pid", Type: cabi.U32}, {Name: "nl_groups", Type: cabi.U32}})
	if unix.SizeofSockaddrNetlink != unsafe.Sizeof(sa) {
		t.Errorf("SizeofSockaddrNetlink %d, struct %d", unix.SizeofSockaddrNetlink, unsafe.Sizeof(sa))
	}

	// struct sock_filter and struct sock_fprog (include/uapi/linux/filter.h).
	var sf unix.SockFilter
	checkLayout(t, "sock_filter", unsafe.Sizeof(sf), []goField{
		{"Code", unsafe.Offsetof(sf.Code), unsafe.Sizeof(sf.Code)},
		{"Jt", unsafe.Offsetof(sf.Jt), unsafe.Sizeof(sf.Jt)},
		{"Jf", unsafe.Offsetof(sf.Jf), unsafe.Sizeof(sf.Jf)},
		{"K", unsafe.Offsetof(sf.K), unsafe.Sizeof(sf.K)},
	}, []cabi.Field{{Name: "code", Type: cabi.U16}, {Name: "jt", Type: cabi.U8}, {Name: "jf", Type: cabi.U8}, {Name: "k", Type: cabi.U32}})
	var fp unix.SockFprog
	checkLayout(t, "sock_fprog", unsafe.Sizeof(fp), []goField{
		{"Len", unsafe.Offsetof(fp.Len), unsafe.Sizeof(fp.Len)},
		{"Filter", unsafe.Offsetof(fp.Filter), unsafe.Sizeof(fp.Filter)},
	}, []cabi.Field{{Name: "len", Type: cabi.U16}, {Name: "filter", Type: cabi.Ptr}})

	// struct timeval for SO_SNDTIMEO: two longs (the old timeval, which is
	// what SO_SNDTIMEO means on 32-bit systems).
	var tv unix.Timeval
	checkLayout(t, "timeval", unsafe.Sizeof(tv), []goField{
		{"Sec", unsafe.Offsetof(tv.Sec), unsafe.Sizeof(tv.Sec)},
		{"Usec", unsafe.Offsetof(tv.Usec), unsafe.Sizeof(tv.Usec)},
	}, []cabi.Field{{Name: "tv_sec", Type: cabi.Long}, {Name: "tv_usec", Type: cabi.Long}})
}

// TestWireLayouts checks the header sizes and field offsets the encoder and
// decoder use (they write bytes, not structs) against the C layout of
// struct nlmsghdr and struct cn_msg.
func TestWireLayouts(t *testing.T) {
	nlh := cabi.Struct(cabi.Field{Name: "nlmsg_len", Type: cabi.U32}, cabi.Field{Name: "nlmsg_type", Type: cabi.U16},
		cabi.Field{Name: "nlmsg_flags", Type: cabi.U16}, cabi.Field{Name: "nlmsg_seq", Type: cabi.U32}, cabi.Field{Name: "nlmsg_pid", Type: cabi.U32})
	if nlh.Type.Size != nlmsgHeaderLen {
		t.Errorf("nlmsgHeaderLen %d, C sizeof(struct nlmsghdr) %d", nlmsgHeaderLen, nlh.Type.Size)
	}
	// struct cn_msg { struct cb_id id; __u32 seq, ack; __u16 len, flags; __u8 data[]; }
	cbID := cabi.Struct(cabi.Field{Name: "idx", Type: cabi.U32}, cabi.Field{Name: "val", Type: cabi.U32})
	cn := cabi.Struct(cabi.Field{Name: "id", Type: cbID.Type}, cabi.Field{Name: "seq", Type: cabi.U32}, cabi.Field{Name: "ack", Type: cabi.U32},
		cabi.Field{Name: "len", Type: cabi.U16}, cabi.Field{Name: "flags", Type: cabi.U16}, cabi.Field{Name: "data", Type: cabi.Type{Size: 0, Align: 1}})
	if cn.Type.Size != HeaderLen {
		t.Errorf("HeaderLen %d, C sizeof(struct cn_msg) %d", HeaderLen, cn.Type.Size)
	}
	// The offsets that Message.decode and AppendBinary use.
	for i, want := range []uintptr{0, 8, 12, 16, 18, 20} {
		if cn.Offsets[i] != want {
			t.Errorf("cn_msg field %d at C offset %d, the codec uses %d", i, cn.Offsets[i], want)
		}
	}
}
