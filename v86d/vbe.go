package v86d

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Capabilities of the VBE controller (VBE_CAP_* in
// include/uapi/video/uvesafb.h).
const (
	CapCanSwitchDAC = 0x01
	CapVGACompat    = 0x02
)

// Mode attributes (VBE_MODE_* in include/video/uvesafb.h). uvesafb uses a
// mode only if all of ModeUsable are set and it has at least 8 bits per
// pixel.
const (
	ModeSupportedHW = 0x01
	ModeColor       = 0x08
	ModeGraphics    = 0x10
	ModeVGACompat   = 0x20
	ModeLFB         = 0x80
	ModeUsable      = ModeSupportedHW | ModeColor | ModeGraphics | ModeLFB
)

// VBE function numbers (AX) that uvesafb calls.
const (
	FuncGetInfo      = 0x4f00 // controller information, FlagVBEIB
	FuncGetModeInfo  = 0x4f01 // mode information, CX = mode
	FuncSetMode      = 0x4f02 // BX = mode | 0x4000 (LFB) [| 0x0800 with a CRTC block]
	FuncState        = 0x4f04 // save/restore state; DL = 0 asks the size
	FuncSetDACWidth  = 0x4f08
	FuncSetPalette   = 0x4f09
	FuncGetPMI       = 0x4f0a // protected-mode interface
	FuncPowerControl = 0x4f10 // blanking (DPMS)
	FuncDDC          = 0x4f15 // EDID
)

// StatusOK is the AX a successful VBE call returns; StatusFailed the AX of
// a supported function that failed.
const (
	StatusOK     = 0x004f
	StatusFailed = 0x014f
)

// InfoBlock is the decoded struct vbe_ib. In what the helper returns, the
// pointers are offsets into the returned 1024-byte buffer (not real-mode
// far pointers): the kernel reads the strings and the mode list there.
type InfoBlock struct {
	Signature         [4]byte // "VESA" in a reply; the kernel sends "VBE2"
	Version           uint16  // BCD: 0x0300 is VBE 3.0; uvesafb needs 0x0200 or more
	OEMStringPtr      uint32
	Capabilities      uint32
	ModeListPtr       uint32 // offset of a list of u16 modes ending in 0xffff
	TotalMemory       uint16 // in 64 KiB units
	OEMSoftwareRev    uint16
	OEMVendorNamePtr  uint32
	OEMProductNamePtr uint32
	OEMProductRevPtr  uint32
	Reserved          [222]byte
	OEMData           [256]byte
	MiscData          [512]byte
}

// ParseInfoBlock decodes the first InfoBlockLen bytes of b.
func ParseInfoBlock(b []byte) (InfoBlock, error) {
	var ib InfoBlock
	if len(b) < InfoBlockLen {
		return ib, fmt.Errorf("%w: %d bytes, a vbe_ib is %d", ErrShort, len(b), InfoBlockLen)
	}
	_, err := binary.Decode(b[:InfoBlockLen], binary.NativeEndian, &ib)
	return ib, err
}

// Append appends the 1024-byte encoding of ib to b.
func (ib *InfoBlock) Append(b []byte) []byte {
	out, _ := binary.Append(b, binary.NativeEndian, ib)
	return out
}

// InfoString reads the NUL-terminated string at offset off of a returned info
// block buffer (OEMStringPtr and the other pointers), as the kernel does.
func InfoString(buf []byte, off uint32) (string, bool) {
	if off == 0 || uint64(off) >= uint64(len(buf)) {
		return "", false
	}
	s := buf[off:]
	i := bytes.IndexByte(s, 0)
	if i < 0 {
		return "", false
	}
	return string(s[:i]), true
}

// ModeList reads the mode list at offset off of a returned info block
// buffer, up to the 0xffff terminator. ok is false when the list runs off
// the buffer without a terminator: the kernel reads on past the buffer in
// that case (uvesafb_vbe_getmodes has no bound), so a helper must never
// send it.
func ModeList(buf []byte, off uint32) (modes []uint16, ok bool) {
	for i := uint64(off); i+2 <= uint64(len(buf)); i += 2 {
		m := binary.NativeEndian.Uint16(buf[i:])
		if m == 0xffff {
			return modes, true
		}
		modes = append(modes, m)
	}
	return modes, false
}

// ModeInfo is the decoded struct vbe_mode_ib (include/video/uvesafb.h).
type ModeInfo struct {
	ModeAttr            uint16
	WinAAttr            uint8
	WinBAttr            uint8
	WinGranularity      uint16
	WinSize             uint16
	WinASeg             uint16
	WinBSeg             uint16
	WinFuncPtr          uint32
	BytesPerScanLine    uint16
	XRes, YRes          uint16
	XCharSize           uint8
	YCharSize           uint8
	Planes              uint8
	BitsPerPixel        uint8
	Banks               uint8
	MemoryModel         uint8 // 4 packed pixel, 6 direct colour
	BankSize            uint8
	ImagePages          uint8
	Reserved1           uint8
	RedLen, RedOff      uint8
	GreenLen            uint8
	GreenOff            uint8
	BlueLen, BlueOff    uint8
	RsvdLen, RsvdOff    uint8
	DirectColorInfo     uint8
	PhysBasePtr         uint32 // the linear framebuffer's physical address
	Reserved2           [6]byte
	LinBytesPerScanLine uint16
	BnkImagePages       uint8
	LinImagePages       uint8
	LinRedLen           uint8
	LinRedOff           uint8
	LinGreenLen         uint8
	LinGreenOff         uint8
	LinBlueLen          uint8
	LinBlueOff          uint8
	LinRsvdLen          uint8
	LinRsvdOff          uint8
	MaxPixelClock       uint32
	// ModeID and Depth are filled in by uvesafb, not by the BIOS.
	ModeID uint16
	Depth  uint8
}

// ParseModeInfo decodes the first ModeInfoLen bytes of b.
func ParseModeInfo(b []byte) (ModeInfo, error) {
	var mi ModeInfo
	if len(b) < ModeInfoLen {
		return mi, fmt.Errorf("%w: %d bytes, a vbe_mode_ib is %d", ErrShort, len(b), ModeInfoLen)
	}
	_, err := binary.Decode(b[:ModeInfoLen], binary.NativeEndian, &mi)
	return mi, err
}

// Append appends the 69-byte encoding of mi to b.
func (mi *ModeInfo) Append(b []byte) []byte {
	out, _ := binary.Append(b, binary.NativeEndian, mi)
	return out
}
