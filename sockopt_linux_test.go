//go:build linux

package connector_test

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cnlink/connector"
)

// TestNoENOBUFSReadBack: Conn.NoENOBUFS reads NETLINK_NO_ENOBUFS from the
// kernel: off by default, on and off again after SetNoENOBUFS, on after
// Dial with Config.NoENOBUFS, and a change made behind the Conn's back
// (setsockopt through SyscallConn) is seen too, so it is no cached value.
// Needs no privilege.
func TestNoENOBUFSReadBack(t *testing.T) {
	c := dial(t, nil)
	check := func(what string, c *connector.Conn, want bool) {
		t.Helper()
		if on, err := c.NoENOBUFS(); on != want || err != nil {
			t.Errorf("%s: NoENOBUFS() = %v, %v; want %v, nil", what, on, err, want)
		}
	}
	check("after Dial", c, false)
	for _, on := range []bool{true, false} {
		if err := c.SetNoENOBUFS(on); err != nil {
			t.Fatal(err)
		}
		check("after SetNoENOBUFS", c, on)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, 1)
	}); err != nil || serr != nil {
		t.Fatalf("setsockopt(NETLINK_NO_ENOBUFS, 1): %v, %v", err, serr)
	}
	check("after setsockopt through SyscallConn", c, true)
	check("after Dial with Config.NoENOBUFS", dial(t, &connector.Config{NoENOBUFS: true}), true)
	c.Close()
	if _, err := c.NoENOBUFS(); !errors.Is(err, connector.ErrClosed) {
		t.Errorf("NoENOBUFS after Close: %v; want ErrClosed", err)
	}
}
