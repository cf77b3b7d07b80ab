package v86d

import (
	"encoding/binary"
	"sync"
)

// A FakeMode is one graphics mode a FakeBIOS offers.
type FakeMode struct {
	ID            uint16 // VBE mode number, for example 0x111
	Width, Height uint16
	BitsPerPixel  uint8 // 8, 15, 16, 24 or 32
}

// DefaultFakeModes are the modes a FakeBIOS offers when Modes is empty:
// uvesafb's default mode (640x480-16) and two 32-bit ones.
var DefaultFakeModes = []FakeMode{
	{0x111, 640, 480, 16},
	{0x115, 800, 600, 32},
	{0x118, 1024, 768, 32},
}

// A FakeBIOS answers uvesafb's VBE calls without a BIOS: it describes a
// linear framebuffer at LFB with the given modes, so that uvesafb registers
// a framebuffer there. It is what the package's tests use as the helper,
// under qemu's standard VGA (whose LFB is at 0xfd000000, PCI BAR 0 of device
// 1234:1111); pass its Handle to a Helper.
//
// It implements 0x4f00 (controller information), 0x4f01 (mode
// information), 0x4f02 (set mode: recorded), 0x4f04 (state size 128 bytes;
// save and restore do nothing), 0x4f08 (DAC width 8), 0x4f09 and 0x4f10
// (accepted), and fails 0x4f0a (no protected-mode interface), 0x4f15 (no
// DDC) and anything else with AX 0x014f. The fake does not touch the
// hardware: the framebuffer works only where LFB really is one.
//
// A FakeBIOS is safe for concurrent use.
type FakeBIOS struct {
	// Version is the VBE version reported, BCD (0 means 0x0300).
	Version uint16
	// LFB is the physical address of the linear framebuffer (0 means
	// 0xfd000000) and Memory its size in bytes (0 means 16 MiB).
	LFB, Memory uint32
	// Modes are the modes offered (nil means DefaultFakeModes).
	Modes []FakeMode
	// OEM is the OEM string (empty means "connector v86d fake").
	OEM string

	mu    sync.Mutex
	calls []Task
	mode  uint16
}

// Calls returns the tasks handled so far, as received.
func (f *FakeBIOS) Calls() []Task {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Task(nil), f.calls...)
}

// Mode returns the mode last set with 0x4f02 (its BX, LFB bit included).
func (f *FakeBIOS) Mode() uint16 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mode
}

func (f *FakeBIOS) modes() []FakeMode {
	if len(f.Modes) == 0 {
		return DefaultFakeModes
	}
	return f.Modes
}

// Handle executes one call; use it as Helper.Handle.
func (f *FakeBIOS) Handle(c *Call) (Task, []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c.Task)
	out := c.Task
	status := uint32(StatusOK)
	var buf []byte
	switch c.Task.Function() {
	case FuncGetInfo:
		if c.Task.BufLen < InfoBlockLen {
			status = StatusFailed
			break
		}
		buf = f.infoBlock()
	case FuncGetModeInfo:
		m, ok := f.find(uint16(c.Task.Regs.ECX))
		if !ok {
			status = StatusFailed
			break
		}
		mi := f.modeInfo(m)
		buf = mi.Append(nil)
		buf = buf[:min(len(buf), int(c.Task.BufLen))]
	case FuncSetMode:
		if _, ok := f.find(uint16(c.Task.Regs.EBX) & 0x1ff); !ok {
			status = StatusFailed
			break
		}
		f.mode = uint16(c.Task.Regs.EBX)
	case FuncState:
		switch uint8(c.Task.Regs.EDX) {
		case 0: // buffer size in 64-byte blocks
			out.Regs.EBX = 2
		default: // save, restore: the buffer comes back unchanged
			buf = c.Buf
		}
	case FuncSetDACWidth:
		out.Regs.EBX = out.Regs.EBX&^0xff00 | 8<<8
	case FuncSetPalette, FuncPowerControl:
	default: // 0x4f0a (PMI), 0x4f15 (DDC) and the rest
		status = StatusFailed
	}
	out.Regs.EAX = out.Regs.EAX&^0xffff | status
	return out, buf
}

func (f *FakeBIOS) find(id uint16) (FakeMode, bool) {
	for _, m := range f.modes() {
		if m.ID == id {
			return m, true
		}
	}
	return FakeMode{}, false
}

// infoBlock builds the 1024-byte vbe_ib: strings in oem_data (from 256),
// the mode list in misc_data (from 512), pointers as offsets.
func (f *FakeBIOS) infoBlock() []byte {
	ib := InfoBlock{Signature: [4]byte{'V', 'E', 'S', 'A'}, Version: f.Version}
	if ib.Version == 0 {
		ib.Version = 0x0300
	}
	mem := f.Memory
	if mem == 0 {
		mem = 16 << 20
	}
	ib.TotalMemory = uint16(min(mem>>16, 0xffff))
	oem := f.OEM
	if oem == "" {
		oem = "connector v86d fake"
	}
	strs := []byte{}
	put := func(s string) uint32 {
		off := 256 + uint32(len(strs))
		if len(strs)+len(s)+1 > 256 {
			return 0
		}
		strs = append(append(strs, s...), 0)
		return off
	}
	ib.OEMStringPtr = put(oem)
	ib.OEMVendorNamePtr = put("connector")
	ib.OEMProductNamePtr = put("FakeBIOS")
	ib.OEMProductRevPtr = put("1")
	copy(ib.OEMData[:], strs)
	ib.ModeListPtr = 512
	i := 0
	for _, m := range f.modes() {
		if i+4 > len(ib.MiscData) {
			break // keep room for the terminator
		}
		binary.NativeEndian.PutUint16(ib.MiscData[i:], m.ID)
		i += 2
	}
	binary.NativeEndian.PutUint16(ib.MiscData[i:], 0xffff)
	return ib.Append(nil)
}

func (f *FakeBIOS) modeInfo(m FakeMode) ModeInfo {
	lfb := f.LFB
	if lfb == 0 {
		lfb = 0xfd000000
	}
	bpp := m.BitsPerPixel
	line := uint16((uint32(m.Width)*uint32(bpp) + 7) / 8)
	mi := ModeInfo{
		ModeAttr:            ModeUsable | 0x02, // 0x02: optional information present
		BytesPerScanLine:    line,
		LinBytesPerScanLine: line,
		XRes:                m.Width,
		YRes:                m.Height,
		XCharSize:           8,
		YCharSize:           16,
		Planes:              1,
		BitsPerPixel:        bpp,
		Banks:               1,
		ImagePages:          1,
		PhysBasePtr:         lfb,
	}
	set := func(r, ro, g, gro, b, bo, x, xo uint8) {
		mi.MemoryModel = 6 // direct colour
		mi.RedLen, mi.RedOff, mi.GreenLen, mi.GreenOff = r, ro, g, gro
		mi.BlueLen, mi.BlueOff, mi.RsvdLen, mi.RsvdOff = b, bo, x, xo
		mi.LinRedLen, mi.LinRedOff, mi.LinGreenLen, mi.LinGreenOff = r, ro, g, gro
		mi.LinBlueLen, mi.LinBlueOff, mi.LinRsvdLen, mi.LinRsvdOff = b, bo, x, xo
	}
	switch bpp {
	case 8:
		mi.MemoryModel = 4 // packed pixel
	case 15:
		set(5, 10, 5, 5, 5, 0, 1, 15)
	case 16:
		set(5, 11, 6, 5, 5, 0, 0, 0)
	case 24:
		set(8, 16, 8, 8, 8, 0, 0, 0)
	default:
		set(8, 16, 8, 8, 8, 0, 8, 24)
	}
	return mi
}
