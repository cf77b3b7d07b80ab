//go:build !linux

package proc

import (
	"fmt"
	"runtime"

	"github.com/cnlink/connector"
)

func checkProcEvents() error { return nil }

func checkNamespaces() error { return nil }

func socketDrops(uint32) (uint64, error) {
	return 0, fmt.Errorf("%w: /proc/net/netlink exists only on Linux, not on %s", connector.ErrNotSupported, runtime.GOOS)
}
