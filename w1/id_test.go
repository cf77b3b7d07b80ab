package w1

import (
	"encoding/binary"
	"errors"
	"testing"
)

func TestCRC8(t *testing.T) {
	// Maxim application note 27's example ROM code, and the id of
	// agents.md's probe ("01.665544332211.75" in the kernel's log form).
	for _, tc := range []struct {
		b    []byte
		want byte
	}{
		{[]byte{0x02, 0x1c, 0xb8, 0x01, 0, 0, 0}, 0xa2},
		{[]byte{0x01, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66}, 0x75},
		{nil, 0},
	} {
		if got := CRC8(tc.b); got != tc.want {
			t.Errorf("CRC8(% x) = %#x, want %#x", tc.b, got, tc.want)
		}
		if got := CRC8(append(tc.b, tc.want)); got != 0 {
			t.Errorf("CRC8 over data and its CRC = %#x, want 0", got)
		}
	}
}

func TestSlaveID(t *testing.T) {
	id := NewSlaveID(0x01, 0x665544332211)
	if id != (SlaveID{0x01, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x75}) {
		t.Fatalf("NewSlaveID = % x", id[:])
	}
	if id.Family() != 1 || id.Serial() != 0x665544332211 || id.CRC() != 0x75 || !id.Valid() {
		t.Errorf("Family %x Serial %x CRC %x Valid %v", id.Family(), id.Serial(), id.CRC(), id.Valid())
	}
	if s := id.String(); s != "01-665544332211" {
		t.Errorf("String = %q", s)
	}
	if s := id.KernelString(); s != "01.665544332211.75" {
		t.Errorf("KernelString = %q", s)
	}
	bad := id
	bad[7]++
	if bad.Valid() {
		t.Error("an id with a wrong CRC is valid")
	}
	if NewSlaveID(0x28, 1<<48|5).Serial() != 5 {
		t.Error("bits above 48 were kept")
	}
}

func TestParseSlaveID(t *testing.T) {
	want := NewSlaveID(0x28, 0x79e36c0)
	for _, s := range []string{"28-0000079e36c0", "28-0000079E36C0", "28.0000079e36c0.17"} {
		got, err := ParseSlaveID(s)
		if err != nil || got != want {
			t.Errorf("ParseSlaveID(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	if _, err := ParseSlaveID("28.0000079e36c0.18"); !errors.Is(err, ErrBadCRC) {
		t.Errorf("wrong CRC: err = %v, want ErrBadCRC", err)
	}
	for _, s := range []string{"", "28", "28-79e36c0", "2-0000079e36c0", "zz-0000079e36c0", "28-00000g9e36c0", "28.0000079e36c0", "28.0000079e36c0.1", "28.0000079e36c0.zz", "w1_bus_master1", "+8-0000079e36c0"} {
		if id, err := ParseSlaveID(s); err == nil {
			t.Errorf("ParseSlaveID(%q) = %v, want an error", s, id)
		}
	}
	var id SlaveID
	if err := id.UnmarshalText([]byte("28-0000079e36c0")); err != nil || id != want {
		t.Errorf("UnmarshalText = %v, %v", id, err)
	}
	if b, _ := want.MarshalText(); string(b) != "28-0000079e36c0" {
		t.Errorf("MarshalText = %s", b)
	}
}

func TestSlaveIDKernelOrder(t *testing.T) {
	id := NewSlaveID(0x28, 0x79e36c0)
	k := id.Kernel()
	// struct w1_reg_num is a u64 bit field: family in the low byte.
	if v := binary.NativeEndian.Uint64(k[:]); byte(v) != 0x28 || byte(v>>56) != id.CRC() || v>>8&(1<<48-1) != 0x79e36c0 {
		t.Errorf("Kernel() = % x", k[:])
	}
	if back := SlaveIDFromKernel(k); back != id {
		t.Errorf("SlaveIDFromKernel(Kernel()) = %v, want %v", back, id)
	}
}
