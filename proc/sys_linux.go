//go:build linux

package proc

import (
	"fmt"
	"os"
	"strings"

	"github.com/cnlink/connector"
	"golang.org/x/sys/unix"
)

// Inode numbers of the initial namespaces' /proc/<pid>/ns files, fixed since
// Linux 3.8 (include/linux/proc_ns.h: PROC_USER_INIT_INO, PROC_PID_INIT_INO).
const (
	initUserNSIno = 0xEFFFFFFD
	initPIDNSIno  = 0xEFFFFFFC
)

// checkProcEvents reports ErrNoProcEvents when the kernel's list of
// connector agents (connector.Agents, from /proc/net/connector) has no
// cn_proc. Without the list (a network namespace other than the initial
// one, or no /proc) nothing can be concluded.
func checkProcEvents() error { return procEventsIn(connector.Agents()) }

func procEventsIn(agents []connector.Agent, err error) error {
	if err != nil {
		return nil
	}
	for _, a := range agents {
		if a.ID == connector.IDProc {
			return nil
		}
	}
	return fmt.Errorf("%w (%d other agents registered)", ErrNoProcEvents, len(agents))
}

// ioctls on a pidfd that return a file descriptor of the process's
// namespace (include/uapi/linux/pidfd.h, Linux 6.11: _IO(PIDFS_IOCTL_MAGIC,
// n) with PIDFS_IOCTL_MAGIC 0xFF).
const (
	pidfdGetPIDNamespace  = 0xFF05 // PIDFD_GET_PID_NAMESPACE
	pidfdGetUserNamespace = 0xFF09 // PIDFD_GET_USER_NAMESPACE
)

// nsEvidence says whether this process is in the initial user and PID
// namespaces, on evidence a mount namespace cannot fake: namespace file
// descriptors from the kernel, checked to be on nsfs, compared by inode with
// the initial namespaces' fixed ones. notInit names the non-initial
// namespaces; unknown, if not empty, says what could not be determined.
func nsEvidence() (notInit []string, unknown string) {
	var why []string
	for _, ns := range [...]struct {
		name  string
		ioctl uintptr
		ino   uint64
	}{{"user", pidfdGetUserNamespace, initUserNSIno}, {"pid", pidfdGetPIDNamespace, initPIDNSIno}} {
		ino, err := nsInode(ns.name, ns.ioctl)
		switch {
		case err != nil:
			why = append(why, err.Error())
		case ino != ns.ino:
			notInit = append(notInit, ns.name)
		}
	}
	return notInit, strings.Join(why, "; ")
}

// nsInode returns the inode of this process's namespace of the given kind:
// from a pidfd (Linux 6.11 and later), else from /proc/self/ns/<name>, which
// counts only if the file opened is really on nsfs (a /proc mounted by
// someone else, or a tmpfs over it, is not).
func nsInode(name string, ioctl uintptr) (uint64, error) {
	if pfd, err := unix.PidfdOpen(os.Getpid(), 0); err == nil {
		nsfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(pfd), ioctl, 0)
		_ = unix.Close(pfd)
		if errno == 0 {
			defer unix.Close(int(nsfd))
			return nsfsInode(int(nsfd))
		}
	}
	fd, err := unix.Open("/proc/self/ns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("the %s namespace is unknown: no pidfd namespace ioctl (Linux 6.11) and /proc/self/ns/%s cannot be opened (%v)", name, name, err)
	}
	defer unix.Close(fd)
	ino, err := nsfsInode(fd)
	if err != nil {
		return 0, fmt.Errorf("the %s namespace is unknown: no pidfd namespace ioctl (Linux 6.11) and /proc/self/ns/%s %v", name, name, err)
	}
	return ino, nil
}

// nsfsInode returns the inode of fd if it is a namespace file (on nsfs).
func nsfsInode(fd int) (uint64, error) {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return 0, err
	}
	if uint32(fs.Type) != unix.NSFS_MAGIC {
		return 0, fmt.Errorf("is not a namespace file (file system type %#x, not nsfs): /proc is not the kernel's", uint32(fs.Type))
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// checkNamespaces reports ErrNamespace when this process is not in the
// initial user or PID namespace, where cn_proc ignores subscriptions
// (drivers/connector/cn_proc.c, cn_proc_mcast_ctl). See nsEvidence. If it
// cannot tell, it returns nil.
func checkNamespaces() error {
	which, _ := nsEvidence()
	if len(which) == 0 {
		return nil
	}
	return fmt.Errorf("%w (this process is in a non-initial %s namespace)", ErrNamespace, strings.Join(which, " and "))
}

// namespaceUnknown says what could not be determined about this process's
// namespaces, or "" if they are known.
func namespaceUnknown() string {
	_, unknown := nsEvidence()
	return unknown
}

// kernelVersion returns the running kernel's release (uname -r) and its
// major and minor version, or why they are unknown.
func kernelVersion() (release string, major, minor int, unknown string) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", 0, 0, "uname: " + err.Error()
	}
	release = unix.ByteSliceToString(u.Release[:])
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err != nil {
		return release, 0, 0, fmt.Sprintf("the release %q does not start with a version", release)
	}
	return release, major, minor, ""
}
