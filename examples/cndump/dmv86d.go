//go:build linux

package main

import (
	"fmt"
	"strings"
	"syscall"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/dmlog"
	"github.com/cnlink/connector/internal/cli"
	"github.com/cnlink/connector/v86d"
)

// describeDMV86D decodes messages of dm-log-userspace (id 7:1) and of
// uvesafb/v86d (id 4:1) for the dump, as indented lines; it returns "" for
// other ids.
func describeDMV86D(m connector.Message, from connector.Sender) string {
	switch m.ID {
	case connector.IDDM:
		return describeDM(m, from)
	case connector.IDV86D:
		return describeV86D(m, from)
	}
	return ""
}

// describeDM: the kernel multicasts requests; servers answer to port 0
// (which a dump sees only when a server multicasts by mistake) with the
// header echoed or, with no payload, an ack whose ack field is an errno.
func describeDM(m connector.Message, from connector.Sender) string {
	if len(m.Data) == 0 {
		s := fmt.Sprintf("  dm-log-userspace ack: seq %d errno %d", m.Seq, m.Ack)
		if m.Ack != 0 {
			s += " (" + syscall.Errno(m.Ack).Error() + ")"
		}
		if syscall.Errno(m.Ack) == syscall.EAGAIN {
			s += ": the kernel resends the request at once"
		}
		return s + "\n"
	}
	if !from.Kernel() {
		r, err := dmlog.ParseReply(m.Data)
		if err != nil {
			return fmt.Sprintf("  dm-log-userspace reply: %v\n", err)
		}
		s := fmt.Sprintf("  dm-log-userspace reply: %v seq %d uuid %q luid %#x error %d, %s", r.Type, r.Seq, r.UUID, r.LUID, r.Error, cli.Count(len(r.Data), "data byte", "data bytes"))
		return s + "\n"
	}
	r, err := dmlog.ParseRequest(m.Data)
	if err != nil {
		return fmt.Sprintf("  dm-log-userspace request: %v\n", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "  dm-log-userspace request: %v seq %d uuid %q luid %#x version %d", r.Type, r.Seq, r.UUID, r.LUID, r.Version)
	switch r.Type {
	case dmlog.TypeCtr:
		fmt.Fprintf(&b, " args %q", strings.TrimRight(string(r.Data), "\x00"))
		if strings.HasSuffix(string(r.Data), "\x00") {
			b.WriteString(" (re-sent: the kernel is reconnecting to a server)")
		}
	case dmlog.TypeIsClean, dmlog.TypeInSync, dmlog.TypeIsRemoteRecovering:
		reg, _ := r.Region()
		fmt.Fprintf(&b, " region %d", reg)
	case dmlog.TypeMarkRegion, dmlog.TypeClearRegion, dmlog.TypeFlush:
		if len(r.Data) > 0 {
			rs, _ := r.AppendRegions(nil)
			fmt.Fprintf(&b, " regions %v", rs)
		}
	case dmlog.TypeSetRegionSync:
		reg, in, _ := r.RegionSync()
		fmt.Fprintf(&b, " region %d in_sync %v", reg, in)
	}
	b.WriteByte('\n')
	return b.String()
}

// describeV86D: the kernel multicasts tasks (seq = slot, ack = cookie);
// the helper's replies go to port 0.
func describeV86D(m connector.Message, from connector.Sender) string {
	t, buf, err := v86d.ParseTask(m.Data)
	kind := "task"
	if !from.Kernel() {
		kind = "reply"
	}
	if err != nil {
		return fmt.Sprintf("  v86d %s: %v\n", kind, err)
	}
	if t.Flags&v86d.FlagExit != 0 {
		return fmt.Sprintf("  v86d %s slot %d: TF_EXIT (the helper is to exit)\n", kind, m.Seq)
	}
	r := t.Regs
	s := fmt.Sprintf("  v86d %s slot %d cookie %#x: eax %#x ebx %#x ecx %#x edx %#x es:di %04x:%04x flags %v buffer %s",
		kind, m.Seq, m.Ack, r.EAX, r.EBX, r.ECX, r.EDX, r.ES, r.EDI, t.Flags, cli.Count(len(buf), "byte", "bytes"))
	if kind == "reply" && t.Flags&v86d.FlagVBEIB != 0 {
		if ib, err := v86d.ParseInfoBlock(buf); err == nil {
			modes, ok := v86d.ModeList(buf, ib.ModeListPtr)
			s += fmt.Sprintf("; %q VBE %x.%x, %d KiB, %s", ib.Signature[:], ib.Version>>8, ib.Version&0xff, int(ib.TotalMemory)*64, cli.Count(len(modes), "mode", "modes"))
			if !ok {
				s += " (mode list without its 0xffff terminator: the kernel reads past the buffer)"
			}
		}
	}
	return s + "\n"
}
