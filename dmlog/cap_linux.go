package dmlog

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// checkSysAdmin fails with ErrNoSysAdmin unless CAP_SYS_ADMIN is in the
// process's effective set (capget(2)), which is what the kernel's capable()
// tests when a reply arrives.
func checkSysAdmin() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("dmlog: reading the process's capabilities: %w", err)
	}
	const c = unix.CAP_SYS_ADMIN
	if data[c/32].Effective&(1<<(c%32)) == 0 {
		return ErrNoSysAdmin
	}
	return nil
}
