//go:build linux

package connector

import (
	"testing"
	"unsafe"

	"github.com/cnlink/connector/internal/cabi"
	"golang.org/x/sys/unix"
)

// TestKernelStructLayouts checks every struct this package hands to the
// kernel, by size and field offsets, against the C layout for this GOARCH.
// CI runs it under GOARCH=386 as well as natively. The structs recvmmsg
// reads are checked in internal/transport, where they live.
func TestKernelStructLayouts(t *testing.T) {
	// struct sockaddr_nl, which sendto takes, is checked with the
	// recvmmsg structs in internal/transport.

	// struct sock_filter and struct sock_fprog (include/uapi/linux/filter.h).
	var sf unix.SockFilter
	cabi.Check(t, "sock_filter", unsafe.Sizeof(sf), []cabi.GoField{
		{Name: "Code", Offset: unsafe.Offsetof(sf.Code), Size: unsafe.Sizeof(sf.Code)},
		{Name: "Jt", Offset: unsafe.Offsetof(sf.Jt), Size: unsafe.Sizeof(sf.Jt)},
		{Name: "Jf", Offset: unsafe.Offsetof(sf.Jf), Size: unsafe.Sizeof(sf.Jf)},
		{Name: "K", Offset: unsafe.Offsetof(sf.K), Size: unsafe.Sizeof(sf.K)},
	}, []cabi.Field{{Name: "code", Type: cabi.U16}, {Name: "jt", Type: cabi.U8}, {Name: "jf", Type: cabi.U8}, {Name: "k", Type: cabi.U32}})
	var fp unix.SockFprog
	cabi.Check(t, "sock_fprog", unsafe.Sizeof(fp), []cabi.GoField{
		{Name: "Len", Offset: unsafe.Offsetof(fp.Len), Size: unsafe.Sizeof(fp.Len)},
		{Name: "Filter", Offset: unsafe.Offsetof(fp.Filter), Size: unsafe.Sizeof(fp.Filter)},
	}, []cabi.Field{{Name: "len", Type: cabi.U16}, {Name: "filter", Type: cabi.Ptr}})

	// struct timeval for SO_SNDTIMEO: two longs (the old timeval, which is
	// what SO_SNDTIMEO means on 32-bit systems).
	var tv unix.Timeval
	cabi.Check(t, "timeval", unsafe.Sizeof(tv), []cabi.GoField{
		{Name: "Sec", Offset: unsafe.Offsetof(tv.Sec), Size: unsafe.Sizeof(tv.Sec)},
		{Name: "Usec", Offset: unsafe.Offsetof(tv.Usec), Size: unsafe.Sizeof(tv.Usec)},
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
