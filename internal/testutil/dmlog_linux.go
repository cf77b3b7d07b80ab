//go:build linux

package testutil

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cnlink/connector"
	"golang.org/x/sys/unix"
)

// RequireDMLog is the preamble of a test that drives the real
// dm-log-userspace with a mirror of its own: it needs CAP_SYS_ADMIN, the
// modules dm-mirror, dm-zero and dm-log-userspace (RequireModule), the
// kernel matrix (on a real machine another log server may own the
// mirrors: the test skips, naming pkg, the package to give .ci/matrix
// -pkgs), the device-mapper control node (made if missing) and the agent.
func RequireDMLog(t testing.TB, pkg string) {
	t.Helper()
	RequireConnector(t)
	RequireCapability(t, unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN")
	for _, m := range []string{"dm-mirror", "dm-zero", "dm-log-userspace"} {
		RequireModule(t, m, "")
	}
	if !InMatrix() {
		t.Skipf("runs only in the kernel matrix (.ci/matrix -pkgs %s): on a real machine another dm-log-userspace server may own the mirrors", pkg)
	}
	if err := dmControlNode(); err != nil {
		t.Fatalf("no device-mapper control node: %v", err)
	}
	RequireAgent(t, connector.IDDM, "dm-log-userspace")
}

// dmControlNode makes sure /dev/mapper/control exists: devtmpfs creates it
// when dm-mod registers its misc device, but a node can be missing where
// /dev is not devtmpfs; then it is made from /proc/misc.
func dmControlNode() error {
	if _, err := os.Stat("/dev/mapper/control"); err == nil {
		return nil
	}
	b, err := os.ReadFile("/proc/misc")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && f[1] == "device-mapper" {
			var minor uint32
			if _, err := fmt.Sscan(f[0], &minor); err != nil {
				return fmt.Errorf("/proc/misc line %q: %v", l, err)
			}
			if err := os.MkdirAll("/dev/mapper", 0o755); err != nil {
				return err
			}
			return unix.Mknod("/dev/mapper/control", unix.S_IFCHR|0o600, int(unix.Mkdev(10, minor)))
		}
	}
	return errors.New("/proc/misc lists no device-mapper (dm-mod is not loaded)")
}
