package v86d

import (
	"encoding/binary"
	"testing"
	"unsafe"
)

// kernelTask mirrors struct uvesafb_task with its C alignment, to check
// the offsets the codec uses on every GOARCH.
type kernelTask struct {
	Flags  uint8
	BufLen int32
	Regs   Regs
}

func TestLayout(t *testing.T) {
	var k kernelTask
	if s := unsafe.Sizeof(k); s != TaskLen {
		t.Errorf("sizeof(uvesafb_task) = %d, want %d", s, TaskLen)
	}
	if o := unsafe.Offsetof(k.BufLen); o != 4 {
		t.Errorf("buf_len at %d, want 4", o)
	}
	if o := unsafe.Offsetof(k.Regs); o != 8 {
		t.Errorf("regs at %d, want 8", o)
	}
	if o := unsafe.Offsetof(k.Regs.CS); o != 40 {
		t.Errorf("regs.cs at %d, want 40", o)
	}
	// The packed blocks: binary.Size counts without padding.
	if s := binary.Size(InfoBlock{}); s != InfoBlockLen {
		t.Errorf("vbe_ib %d bytes, want %d", s, InfoBlockLen)
	}
	if s := binary.Size(ModeInfo{}); s != ModeInfoLen {
		t.Errorf("vbe_mode_ib %d bytes, want %d", s, ModeInfoLen)
	}
	var ib InfoBlock
	ib.ModeListPtr = 0x11223344
	if b := ib.Append(nil); binary.NativeEndian.Uint32(b[14:]) != 0x11223344 {
		t.Error("mode_list_ptr not at offset 14")
	}
	var mi ModeInfo
	mi.PhysBasePtr = 0xfd000000
	mi.MaxPixelClock = 7
	mi.ModeID = 0x111
	b := mi.Append(nil)
	if binary.NativeEndian.Uint32(b[40:]) != 0xfd000000 || binary.NativeEndian.Uint32(b[62:]) != 7 || binary.NativeEndian.Uint16(b[66:]) != 0x111 {
		t.Errorf("vbe_mode_ib offsets: phys_base_ptr at 40, max_pixel_clock at 62, mode_id at 66: %x", b)
	}
}
