//go:build !linux

package proc

import (
	"fmt"
	"runtime"

	"github.com/cnlink/connector"
)

// Snapshot lists the live processes. It is supported on Linux only.
func Snapshot() ([]Process, error) {
	return nil, fmt.Errorf("proc: snapshot: %w: /proc process listing exists only on Linux, not on %s", connector.ErrNotSupported, runtime.GOOS)
}
