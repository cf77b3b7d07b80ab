// Package v86d speaks the protocol between the uvesafb framebuffer driver
// (drivers/video/fbdev/uvesafb.c, connector id 4:1, multicast group 4) and
// its userspace helper, v86d, which runs the video BIOS's VBE calls for the
// kernel.
//
// The kernel multicasts a task (a struct uvesafb_task: flags, buffer length
// and the x86 registers of a real-mode call, followed by the buffer) with
// cn_msg.seq set to the task's slot (0 to 15) and cn_msg.ack to a random
// cookie. The helper answers to the kernel (port 0) with the same seq and
// ack, the registers after the call and, for FlagBufRet and FlagVBEIB tasks,
// the buffer. ParseTask and AppendTask are the codec
// (include/uapi/video/uvesafb.h); InfoBlock and ModeInfo decode the VBE
// controller and mode information blocks (include/uapi/video/uvesafb.h,
// include/video/uvesafb.h). Helper answers tasks with a Handle function,
// and FakeBIOS is one that describes a linear framebuffer without any BIOS,
// enough for uvesafb to register /dev/fb0 on qemu's standard VGA.
//
// This package is for tests and diagnostics: uvesafb works only with a
// legacy VGA BIOS, and Debian's C v86d runs real BIOS code. It is also the
// connector's cleanest kernel-initiated request with a deadline.
//
// # Deadlines and the helper's life
//
// uvesafb waits 5 s (Timeout) for each reply, then fails that call, and with
// it usually the probe. When nobody listens on group 4, the kernel starts
// the helper named by the module parameter v86d (default /sbin/v86d) with
// call_usermodehelper and UMH_WAIT_PROC: it waits until that program exits,
// then sends its task again. A helper must therefore leave a daemon that
// listens and exit (Daemonize). When the module is unloaded and the kernel
// had started the helper, it sends a FlagExit task and expects no reply;
// Helper.Serve then returns ErrExit.
//
// # Privileges
//
// The kernel ignores, silently, replies from processes without
// CAP_SYS_ADMIN, and joining group 4 needs CAP_NET_ADMIN. Any process with
// both can listen on group 4 next to the real v86d and race it: the kernel
// takes the first reply that carries the task's slot and cookie, and the
// cookie travels in the multicast every listener sees. A reply can also
// make the kernel misbehave: uvesafb walks the mode list up to its 0xffff
// terminator without a bound, so a list without one makes it read past the
// buffer (ModeList reports such a list).
package v86d
