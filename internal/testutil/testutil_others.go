//go:build !linux

package testutil

import (
	"context"
	"errors"
	"fmt"
	"github.com/cnlink/connector"
	"runtime"
	"testing"
)

func skipNotLinux(t testing.TB) {
	t.Helper()
	t.Skipf("kernel feature missing: the netlink connector exists only on Linux, not on %s/%s", runtime.GOOS, runtime.GOARCH)
}

// RequireConnector skips the test: only Linux has the netlink connector.
func RequireConnector(t testing.TB) { t.Helper(); skipNotLinux(t) }

// HasCapability reports false: capabilities are a Linux feature.
func HasCapability(int) (bool, error) { return false, nil }

// RequireCapability skips the test: capabilities are a Linux feature.
func RequireCapability(t testing.TB, _ int, _ string) { t.Helper(); skipNotLinux(t) }

// RequireInitialNetNS skips the test: only Linux has the netlink connector.
func RequireInitialNetNS(t testing.TB) { t.Helper(); skipNotLinux(t) }

// RequireProcEvents skips the test: only Linux has the process events
// connector.
func RequireProcEvents(t testing.TB) { t.Helper(); skipNotLinux(t) }

// NewNetNS skips the test: network namespaces are a Linux feature.
func NewNetNS(t testing.TB) int { t.Helper(); skipNotLinux(t); return -1 }

// DropCapabilityThread fails: capabilities are a Linux feature.
func DropCapabilityThread(int) error {
	return fmt.Errorf("capabilities exist only on Linux, not on %s", runtime.GOOS)
}

// FDCount skips the test: it counts descriptors through Linux's /proc.
func FDCount(t testing.TB) int { t.Helper(); skipNotLinux(t); return 0 }

// InMatrix reports false: the kernel matrix runs Linux.
func InMatrix() bool { return false }

// MatrixKernel returns "": the kernel matrix runs Linux.
func MatrixKernel() string { return "" }

// LoadModule fails: kernel modules are a Linux feature.
func LoadModule(name, _ string) error {
	return errors.New("load module " + name + ": kernel modules are a Linux feature")
}

// UnloadModule fails: kernel modules are a Linux feature.
func UnloadModule(name string) error {
	return errors.New("unload module " + name + ": kernel modules are a Linux feature")
}

// ModuleLoaded reports false: kernel modules are a Linux feature.
func ModuleLoaded(string) bool { return false }

// RequireModule skips the test: kernel modules are a Linux feature.
func RequireModule(t testing.TB, _, _ string) { t.Helper(); skipNotLinux(t) }

// RequireAgent skips the test: only Linux has the netlink connector.
func RequireAgent(t testing.TB, _ connector.CBID, _ string) { t.Helper(); skipNotLinux(t) }

// KernelVersion skips the test: it reads the Linux kernel's version.
func KernelVersion(t testing.TB) (major, minor int) { t.Helper(); skipNotLinux(t); return 0, 0 }

// KernelAtLeast skips the test: it reads the Linux kernel's version.
func KernelAtLeast(t testing.TB, _, _ int) bool { t.Helper(); skipNotLinux(t); return false }

// CheckAgentGate skips the test: only Linux has kernel agents.
func CheckAgentGate(t testing.TB, _ connector.CBID, _ string, _ func(*connector.Conn) error, _ func(context.Context, *connector.Conn) error) {
	t.Helper()
	skipNotLinux(t)
}

// BecomeNobody fails: switching users this way is Linux's.
func BecomeNobody() error {
	return fmt.Errorf("switching to uid 65534 on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}
