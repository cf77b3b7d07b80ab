// Package capcheck tells whether the process may expect a kernel agent to
// take its replies: dm-log-userspace and uvesafb ignore, silently, messages
// from tasks without CAP_SYS_ADMIN, and nothing at all takes a message for
// an agent that is not registered.
package capcheck

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// SysAdmin reports whether the calling thread has CAP_SYS_ADMIN in its
// effective set (capget(2)), which is what the kernel's capable() tests
// when a message arrives.
func SysAdmin() (bool, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false, fmt.Errorf("reading the process's capabilities (capget): %w", err)
	}
	const c = unix.CAP_SYS_ADMIN
	return data[c/32].Effective&(1<<(c%32)) != 0, nil
}
