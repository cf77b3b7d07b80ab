package cabi

import (
	"slices"
	"testing"
	"unsafe"
)

// TestStruct checks the calculator on layouts whose C sizes are documented
// facts: struct nlmsghdr is 16 bytes and struct iovec two pointers.
func TestStruct(t *testing.T) {
	nlh := Struct(Field{Name: "nlmsg_len", Type: U32}, Field{Name: "nlmsg_type", Type: U16}, Field{Name: "nlmsg_flags", Type: U16},
		Field{Name: "nlmsg_seq", Type: U32}, Field{Name: "nlmsg_pid", Type: U32})
	if nlh.Type.Size != 16 || !slices.Equal(nlh.Offsets, []uintptr{0, 4, 6, 8, 12}) {
		t.Errorf("nlmsghdr: %+v", nlh)
	}
	p := unsafe.Sizeof(uintptr(0))
	// A char then a pointer: the pointer is aligned, and the struct is
	// rounded up to the pointer's alignment.
	cp := Struct(Field{Name: "c", Type: U8}, Field{Name: "p", Type: Ptr}, Field{Name: "d", Type: U16})
	if cp.Type.Size != 3*p || !slices.Equal(cp.Offsets, []uintptr{0, p, 2 * p}) || cp.Type.Align != p {
		t.Errorf("char, pointer, short: %+v", cp)
	}
	// A zero-size flexible array member adds nothing.
	flex := Struct(Field{Name: "n", Type: U32}, Field{Name: "data", Type: Type{Size: 0, Align: 1}})
	if flex.Type.Size != 4 {
		t.Errorf("flexible array: %+v", flex)
	}
}
