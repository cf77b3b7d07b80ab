// Package cabi computes the layout a C compiler gives a struct on the Linux
// ABI of the target the program is built for, so that tests can check the
// Go mirrors of kernel structs (their size and every field's offset) on
// every GOARCH.
//
// Every Linux ABI that Go supports aligns the C scalar types used here
// (char, short, int, long, pointers, size_t) to their own size, and a
// struct to its most aligned member, with its size rounded up to that
// alignment. long, size_t and pointers have the pointer's size; int is 4
// bytes.
package cabi

import (
	"testing"
	"unsafe"
)

// A Type is a C type: its size and alignment in bytes on the target.
type Type struct {
	Size, Align uintptr
}

// The scalar C types on the target.
var (
	U8   = Type{Size: 1, Align: 1} // char, __u8
	U16  = Type{Size: 2, Align: 2} // short, __u16, sa_family_t
	U32  = Type{Size: 4, Align: 4} // int, unsigned int, __u32
	Long = Type{Size: ptrSize, Align: ptrSize}
	Ptr  = Type{Size: ptrSize, Align: ptrSize} // any pointer
	Size = Type{Size: ptrSize, Align: ptrSize} // size_t, __kernel_size_t
)

const ptrSize = unsafe.Sizeof(uintptr(0))

// A Field is a member of a C struct.
type Field struct {
	Name string
	Type Type
}

// A Layout is a C struct's layout: each field's offset, in order, and the
// struct's size and alignment.
type Layout struct {
	Offsets []uintptr
	Type    Type
}

// Struct lays out fields as a C compiler does: each at the next offset
// aligned to its type, and the whole rounded up to the largest alignment. A
// zero-size trailing member (a flexible array such as cn_msg's data[])
// adds no size, unlike a zero-size last field in Go, which is padded.
func Struct(fields ...Field) Layout {
	var l Layout
	off, align := uintptr(0), uintptr(1)
	for _, f := range fields {
		off = roundUp(off, f.Type.Align)
		l.Offsets = append(l.Offsets, off)
		off += f.Type.Size
		align = max(align, f.Type.Align)
	}
	l.Type = Type{Size: roundUp(off, align), Align: align}
	return l
}

func roundUp(n, a uintptr) uintptr { return (n + a - 1) / a * a }

// A GoField is a Go struct field's name, offset and size
// (unsafe.Offsetof, unsafe.Sizeof), listed in the order of the C fields it
// mirrors.
type GoField struct {
	Name         string
	Offset, Size uintptr
}

// Check reports through t every difference between a Go struct (its size
// and fields) and the C layout of the fields it mirrors.
func Check(t testing.TB, name string, goSize uintptr, gf []GoField, cf []Field) {
	t.Helper()
	c := Struct(cf...)
	if goSize != c.Type.Size {
		t.Errorf("%s: Go size %d, C size %d", name, goSize, c.Type.Size)
	}
	if len(gf) != len(cf) {
		t.Fatalf("%s: %d Go fields against %d C fields", name, len(gf), len(cf))
	}
	for i := range gf {
		if gf[i].Offset != c.Offsets[i] || gf[i].Size != cf[i].Type.Size {
			t.Errorf("%s.%s: Go offset %d size %d, C (%s) offset %d size %d",
				name, gf[i].Name, gf[i].Offset, gf[i].Size, cf[i].Name, c.Offsets[i], cf[i].Type.Size)
		}
	}
}
