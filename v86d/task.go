package v86d

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Sizes from include/uapi/video/uvesafb.h and include/video/uvesafb.h
// (unchanged from Linux 2.6.24 to 7.3).
const (
	// TaskLen is sizeof(struct uvesafb_task): u8 flags, 3 bytes of
	// padding, int buf_len, struct v86_regs (ten u32 and six u16).
	TaskLen = 60
	// InfoBlockLen is sizeof(struct vbe_ib), the VBE controller
	// information block (packed): the 512 bytes VBE defines plus 512 of
	// misc_data, where v86d puts the strings and the mode list.
	InfoBlockLen = 1024
	// ModeInfoLen is sizeof(struct vbe_mode_ib) (packed): the VBE 3.0
	// mode information block up to max_pixel_clock, then two fields the
	// driver fills itself (mode_id, depth).
	ModeInfoLen = 69
	// MaxBufLen is the largest buffer a task can carry: the kernel refuses
	// to send a task whose cn_msg exceeds CONNECTOR_MAX_MSG_SIZE (16384).
	MaxBufLen = 16384 - 20 - TaskLen
	// TasksMax is UVESAFB_TASKS_MAX: the kernel numbers its tasks 0 to 15
	// in cn_msg.seq and ignores replies with a larger seq.
	TasksMax = 16
)

// Flags are the task flags (TF_* in include/uapi/video/uvesafb.h).
type Flags uint8

const (
	// FlagVBEIB: the buffer is a vbe_ib to fill (function 0x4f00); the
	// helper puts the strings and mode list into it and turns the far
	// pointers into offsets from the buffer's start.
	FlagVBEIB Flags = 0x01
	// FlagBufESDI: the buffer is passed to the BIOS at ES:DI.
	FlagBufESDI Flags = 0x02
	// FlagBufESBX: the buffer is passed at ES:BX.
	FlagBufESBX Flags = 0x04
	// FlagBufRet: the buffer's contents after the call are returned.
	FlagBufRet Flags = 0x08
	// FlagExit: the helper is to exit; no reply is expected. The kernel
	// sends it when the module is unloaded, if it started the helper.
	FlagExit Flags = 0x10
)

// String lists the set flags: "VBEIB|BUF_RET".
func (f Flags) String() string {
	if f == 0 {
		return "0"
	}
	names := [...]string{"VBEIB", "BUF_ESDI", "BUF_ESBX", "BUF_RET", "EXIT"}
	s := ""
	for i, n := range names {
		if f&(1<<i) != 0 {
			if s != "" {
				s += "|"
			}
			s += n
		}
	}
	if rest := f &^ 0x1f; rest != 0 {
		if s != "" {
			s += "|"
		}
		s += fmt.Sprintf("%#x", uint8(rest))
	}
	return s
}

// Regs is struct v86_regs: the x86 registers of the real-mode BIOS call,
// in and out.
type Regs struct {
	EBX, ECX, EDX, ESI, EDI, EBP, EAX, EIP, EFLAGS, ESP uint32
	CS, SS, ES, DS, FS, GS                              uint16
}

// A Task is a decoded struct uvesafb_task: one BIOS call.
type Task struct {
	Flags Flags
	// BufLen is the length of the buffer that follows the task: in a
	// request, the room the kernel has for the result; in a reply, the
	// bytes returned (at most the request's).
	BufLen uint32
	Regs   Regs
}

// Function returns the VBE function number, AX (for example 0x4f01).
func (t Task) Function() uint16 { return uint16(t.Regs.EAX) }

// Errors; each is returned wrapped with the details.
var (
	// ErrShort matches a payload shorter than a task or than the buffer
	// its buf_len announces.
	ErrShort = errors.New("v86d: message shorter than its task says")
	// ErrInvalid matches a field out of range.
	ErrInvalid = errors.New("v86d: invalid task")
)

// ParseTask decodes a cn_msg payload of id 4:1: the task and the buffer
// that follows it (which aliases p). The buffer is BufLen bytes; more bytes
// after it are ignored. A BufLen above MaxBufLen or beyond the payload is an
// error.
func ParseTask(p []byte) (Task, []byte, error) {
	var t Task
	if len(p) < TaskLen {
		return t, nil, fmt.Errorf("%w: %d bytes, a task is %d", ErrShort, len(p), TaskLen)
	}
	ne := binary.NativeEndian
	t.Flags = Flags(p[0])
	bl := int32(ne.Uint32(p[4:]))
	if bl < 0 || bl > MaxBufLen {
		return t, nil, fmt.Errorf("%w: buf_len %d out of range 0 to %d", ErrInvalid, bl, MaxBufLen)
	}
	t.BufLen = uint32(bl)
	r := p[8:]
	u := func(i int) uint32 { return ne.Uint32(r[4*i:]) }
	h := func(i int) uint16 { return ne.Uint16(r[40+2*i:]) }
	t.Regs = Regs{u(0), u(1), u(2), u(3), u(4), u(5), u(6), u(7), u(8), u(9), h(0), h(1), h(2), h(3), h(4), h(5)}
	if int(t.BufLen) > len(p)-TaskLen {
		return t, nil, fmt.Errorf("%w: buf_len %d, but %d bytes follow the task", ErrShort, t.BufLen, len(p)-TaskLen)
	}
	return t, p[TaskLen : TaskLen+int(t.BufLen)], nil
}

// AppendTask appends the encoding of t and buf to b, with buf_len set to
// len(buf) (t.BufLen is ignored). It fails for a buffer above MaxBufLen.
func AppendTask(b []byte, t Task, buf []byte) ([]byte, error) {
	if len(buf) > MaxBufLen {
		return b, fmt.Errorf("%w: %d buffer bytes, at most %d", ErrInvalid, len(buf), MaxBufLen)
	}
	ne := binary.NativeEndian
	b = append(b, byte(t.Flags), 0, 0, 0)
	b = ne.AppendUint32(b, uint32(len(buf)))
	r := t.Regs
	for _, v := range [...]uint32{r.EBX, r.ECX, r.EDX, r.ESI, r.EDI, r.EBP, r.EAX, r.EIP, r.EFLAGS, r.ESP} {
		b = ne.AppendUint32(b, v)
	}
	for _, v := range [...]uint16{r.CS, r.SS, r.ES, r.DS, r.FS, r.GS} {
		b = ne.AppendUint16(b, v)
	}
	return append(b, buf...), nil
}
