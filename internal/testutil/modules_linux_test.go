//go:build linux

package testutil

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestIntegrationLoadModule loads dm-delay, whose dependency dm-mod must
// come first, through LoadModule, as tests of load-it-yourself modules
// (uvesafb) do, and unloads it again. No other package's tests load
// dm-delay (dm-zero, say, is dmlog's), so the test sees it unloaded
// whatever ran before it in the same VM.
func TestIntegrationLoadModule(t *testing.T) {
	if !InMatrix() {
		t.Skip("runs only in the kernel matrix (.ci/matrix -pkgs ./internal/testutil), which puts dm-delay into the guest")
	}
	RequireCapability(t, unix.CAP_SYS_MODULE, "CAP_SYS_MODULE")
	if ModuleLoaded("dm_delay") {
		t.Fatal("dm_delay is loaded before the test: something else loaded it; the test would prove nothing")
	}
	if err := LoadModule("dm-delay", ""); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"dm_mod", "dm_delay"} {
		if !ModuleLoaded(m) {
			t.Errorf("%s not in /sys/module after LoadModule(dm-delay)", m)
		}
	}
	// The device-mapper target registered: the kernel lists it once
	// a dm ioctl asks; /proc/modules is the direct record.
	b, err := os.ReadFile("/proc/modules")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "dm_delay ") {
		t.Errorf("/proc/modules has no dm_delay:\n%s", b)
	}
	if err := LoadModule("dm_delay", ""); err != nil {
		t.Errorf("loading a loaded module again: %v, want nil", err)
	}
	if err := UnloadModule("dm-delay"); err != nil {
		t.Fatal(err)
	}
	if ModuleLoaded("dm_delay") {
		t.Error("dm_delay still loaded after UnloadModule")
	}
	if err := LoadModule("no-such-module", ""); err == nil || !strings.Contains(err.Error(), "kmatrix-modules") {
		t.Errorf("LoadModule(no-such-module) = %v, want an error naming testdata/kmatrix-modules", err)
	}
	t.Logf("kernel %s: dm-delay loaded with dm-mod and unloaded", MatrixKernel())
}
