//go:build linux

package transport

import (
	"testing"
	"unsafe"

	"github.com/cnlink/connector/internal/cabi"
	"golang.org/x/sys/unix"
)

// msghdrC is struct user_msghdr (include/linux/socket.h), what recvmmsg
// reads; a 32-bit process on a 64-bit kernel passes struct compat_msghdr,
// which has the same 32-bit layout.
var msghdrC = []cabi.Field{
	{Name: "msg_name", Type: cabi.Ptr}, {Name: "msg_namelen", Type: cabi.U32}, {Name: "msg_iov", Type: cabi.Ptr},
	{Name: "msg_iovlen", Type: cabi.Size}, {Name: "msg_control", Type: cabi.Ptr}, {Name: "msg_controllen", Type: cabi.Size},
	{Name: "msg_flags", Type: cabi.U32},
}

// TestRecvmmsgLayouts checks the structs recvmmsg reads, by size and field
// offsets, against the C layout for this GOARCH (CI runs it under
// GOARCH=386 too); the compile-time checks in mmsg_linux.go cover mmsghdr
// on every GOARCH that builds.
func TestRecvmmsgLayouts(t *testing.T) {
	var mh unix.Msghdr
	cabi.Check(t, "msghdr", unsafe.Sizeof(mh), []cabi.GoField{
		{Name: "Name", Offset: unsafe.Offsetof(mh.Name), Size: unsafe.Sizeof(mh.Name)},
		{Name: "Namelen", Offset: unsafe.Offsetof(mh.Namelen), Size: unsafe.Sizeof(mh.Namelen)},
		{Name: "Iov", Offset: unsafe.Offsetof(mh.Iov), Size: unsafe.Sizeof(mh.Iov)},
		{Name: "Iovlen", Offset: unsafe.Offsetof(mh.Iovlen), Size: unsafe.Sizeof(mh.Iovlen)},
		{Name: "Control", Offset: unsafe.Offsetof(mh.Control), Size: unsafe.Sizeof(mh.Control)},
		{Name: "Controllen", Offset: unsafe.Offsetof(mh.Controllen), Size: unsafe.Sizeof(mh.Controllen)},
		{Name: "Flags", Offset: unsafe.Offsetof(mh.Flags), Size: unsafe.Sizeof(mh.Flags)},
	}, msghdrC)

	// struct mmsghdr (include/linux/socket.h): a user_msghdr and msg_len.
	var mm mmsghdr
	cabi.Check(t, "mmsghdr", unsafe.Sizeof(mm), []cabi.GoField{
		{Name: "Hdr", Offset: unsafe.Offsetof(mm.Hdr), Size: unsafe.Sizeof(mm.Hdr)},
		{Name: "Len", Offset: unsafe.Offsetof(mm.Len), Size: unsafe.Sizeof(mm.Len)},
	}, []cabi.Field{{Name: "msg_hdr", Type: cabi.Struct(msghdrC...).Type}, {Name: "msg_len", Type: cabi.U32}})
	// recvmmsg indexes an array of them: the i-th entry must start where
	// the kernel looks for it.
	arr := make([]mmsghdr, 3)
	if got, want := uintptr(unsafe.Pointer(&arr[2]))-uintptr(unsafe.Pointer(&arr[0])), 2*cabi.Struct(cabi.Field{Name: "msg_hdr", Type: cabi.Struct(msghdrC...).Type}, cabi.Field{Name: "msg_len", Type: cabi.U32}).Type.Size; got != want {
		t.Errorf("mmsghdr array: entry 2 at offset %d, the kernel reads it at %d", got, want)
	}

	// struct iovec (include/uapi/linux/uio.h).
	var iov unix.Iovec
	cabi.Check(t, "iovec", unsafe.Sizeof(iov), []cabi.GoField{
		{Name: "Base", Offset: unsafe.Offsetof(iov.Base), Size: unsafe.Sizeof(iov.Base)},
		{Name: "Len", Offset: unsafe.Offsetof(iov.Len), Size: unsafe.Sizeof(iov.Len)},
	}, []cabi.Field{{Name: "iov_base", Type: cabi.Ptr}, {Name: "iov_len", Type: cabi.Size}})

	// struct sockaddr_nl (include/uapi/linux/netlink.h), the source
	// address of each datagram.
	var sa unix.RawSockaddrNetlink
	cabi.Check(t, "sockaddr_nl", unsafe.Sizeof(sa), []cabi.GoField{
		{Name: "Family", Offset: unsafe.Offsetof(sa.Family), Size: unsafe.Sizeof(sa.Family)},
		{Name: "Pad", Offset: unsafe.Offsetof(sa.Pad), Size: unsafe.Sizeof(sa.Pad)},
		{Name: "Pid", Offset: unsafe.Offsetof(sa.Pid), Size: unsafe.Sizeof(sa.Pid)},
		{Name: "Groups", Offset: unsafe.Offsetof(sa.Groups), Size: unsafe.Sizeof(sa.Groups)},
	}, []cabi.Field{{Name: "nl_family", Type: cabi.U16}, {Name: "nl_pad", Type: cabi.U16}, {Name: "nl_pid", Type: cabi.U32}, {Name: "nl_groups", Type: cabi.U32}})
}
