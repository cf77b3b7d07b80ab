//go:build linux

package proc

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Inode numbers of the initial namespaces' /proc/<pid>/ns files, fixed since
// Linux 3.8 (include/linux/proc_ns.h: PROC_USER_INIT_INO, PROC_PID_INIT_INO).
const (
	initUserNSIno = 0xEFFFFFFD
	initPIDNSIno  = 0xEFFFFFFC
)

// checkProcEvents reports ErrNoProcEvents when /proc/net/connector exists
// but lists no cn_proc callback. Without the file (a network namespace other
// than the initial one, or no /proc) nothing can be concluded.
func checkProcEvents() error { return checkConnectorFile("/proc/net/connector") }

func checkConnectorFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	for line := range bytes.Lines(b) {
		if f := bytes.Fields(line); len(f) > 0 && string(f[0]) == "cn_proc" {
			return nil
		}
	}
	return fmt.Errorf("%w (checked %s)", ErrNoProcEvents, path)
}

// checkNamespaces reports ErrNamespace when this process is not in the
// initial user or PID namespace, where cn_proc ignores subscriptions
// (drivers/connector/cn_proc.c, cn_proc_mcast_ctl). It compares the inode
// numbers of /proc/self/ns/{user,pid}, the active namespaces, with the
// initial namespaces' fixed ones. If /proc cannot tell, it returns nil.
func checkNamespaces() error {
	var which []string
	for _, ns := range [...]struct {
		name string
		ino  uint64
	}{{"user", initUserNSIno}, {"pid", initPIDNSIno}} {
		ino, ok := nsInode("/proc/self/ns/" + ns.name)
		if ok && ino != ns.ino {
			which = append(which, ns.name)
		}
	}
	if len(which) == 0 {
		return nil
	}
	return fmt.Errorf("%w (this process is in a non-initial %s namespace)", ErrNamespace, strings.Join(which, " and "))
}

func nsInode(path string) (uint64, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Ino, true
}

// socketDrops returns the Drops column of /proc/net/netlink for the
// NETLINK_CONNECTOR socket with the given port id.
func socketDrops(port uint32) (uint64, error) {
	f, err := os.Open("/proc/net/netlink")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return parseNetlinkDrops(f, port)
}

// parseNetlinkDrops reads the /proc/net/netlink table (net/netlink/af_netlink.c,
// netlink_seq_show): sk, Eth (protocol), Pid (port id), Groups, Rmem, Wmem,
// Dump, Locks, Drops, Inode.
func parseNetlinkDrops(r interface{ Read([]byte) (int, error) }, port uint32) (uint64, error) {
	sc := bufio.NewScanner(r)
	want := strconv.FormatUint(uint64(port), 10)
	header := true
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if header {
			header = false
			if len(f) < 9 || f[1] != "Eth" || f[2] != "Pid" || f[8] != "Drops" {
				return 0, fmt.Errorf("unexpected /proc/net/netlink header %q", sc.Text())
			}
			continue
		}
		if len(f) < 9 || f[1] != "11" || f[2] != want {
			continue
		}
		n, err := strconv.ParseUint(f[8], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bad Drops field %q in /proc/net/netlink", f[8])
		}
		return n, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no connector socket with port id %d in /proc/net/netlink: %w", port, fs.ErrNotExist)
}
