package v86d_test

import (
	"fmt"

	"github.com/cnlink/connector/v86d"
)

// Answer uvesafb's first call, 0x4f00, the way a Helper does with a
// FakeBIOS, and read the result as the kernel does.
func ExampleFakeBIOS() {
	bios := &v86d.FakeBIOS{LFB: 0xfd000000}
	in := make([]byte, v86d.InfoBlockLen)
	copy(in, "VBE2") // the kernel pre-fills the signature
	out, buf := bios.Handle(&v86d.Call{
		Task: v86d.Task{Flags: v86d.FlagVBEIB, BufLen: v86d.InfoBlockLen, Regs: v86d.Regs{EAX: v86d.FuncGetInfo}},
		Buf:  in,
	})
	ib, _ := v86d.ParseInfoBlock(buf)
	modes, _ := v86d.ModeList(buf, ib.ModeListPtr)
	oem, _ := v86d.InfoString(buf, ib.OEMStringPtr)
	fmt.Printf("ax %#04x %s %x, %q, modes %#x\n", out.Regs.EAX, ib.Signature[:], ib.Version, oem, modes)
	// Output: ax 0x004f VESA 300, "connector v86d fake", modes [0x111 0x115 0x118]
}

// Encode a task as uvesafb sends it, and decode it.
func ExampleParseTask() {
	b, _ := v86d.AppendTask(nil, v86d.Task{
		Flags: v86d.FlagBufRet | v86d.FlagBufESDI,
		Regs:  v86d.Regs{EAX: v86d.FuncGetModeInfo, ECX: 0x111},
	}, make([]byte, v86d.ModeInfoLen))
	t, buf, _ := v86d.ParseTask(b)
	fmt.Printf("%d bytes: function %#04x mode %#x flags %v, %d-byte buffer\n", len(b), t.Function(), t.Regs.ECX, t.Flags, len(buf))
	// Output: 129 bytes: function 0x4f01 mode 0x111 flags BUF_ESDI|BUF_RET, 69-byte buffer
}
