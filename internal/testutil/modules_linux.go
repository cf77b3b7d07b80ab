//go:build linux

package testutil

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// The kernel matrix (internal/kmatrix, its own module) runs the test
// binaries in a VM whose init exports these variables.
const (
	matrixEnv        = "KMATRIX"         // "1" inside the matrix
	matrixKernelEnv  = "KMATRIX_KERNEL"  // the kernel's label, e.g. "6.12"
	matrixModulesEnv = "KMATRIX_MODULES" // directory of the modules and index.json
)

// InMatrix reports whether the test runs inside the kernel matrix's VM.
// There a kernel feature the matrix provides (the modules of the package's
// testdata/kmatrix-modules) must not be missing: a test should fail, not
// skip, when it is.
func InMatrix() bool { return os.Getenv(matrixEnv) == "1" }

// MatrixKernel returns the label of the matrix kernel the test runs in
// (6.1, 6.12, 6.18, 7.3), or "" outside the matrix.
func MatrixKernel() string { return os.Getenv(matrixKernelEnv) }

// moduleIndex is the JSON of the matrix's module index (the kmatrix
// module's guest.ModuleIndex; the two modules share no code).
type moduleIndex struct {
	Release string `json:"release"`
	Modules map[string]struct {
		File string   `json:"file"`
		Deps []string `json:"deps"`
	} `json:"modules"`
}

var modMu sync.Mutex

// LoadModule loads a kernel module that the kernel matrix put into the
// guest (a "copy NAME" or plain line of the package's
// testdata/kmatrix-modules), its dependencies first, with finit_module. The
// name may use '-' or '_'; params are the module parameters
// ("v86d=/sbin/v86d mtrr=0"). A module that is already loaded is left as it is
// (its parameters are not changed) and is not an error. It needs
// CAP_SYS_MODULE. Outside the matrix it fails: there are no module files
// (see RequireModule).
func LoadModule(name, params string) error {
	modMu.Lock()
	defer modMu.Unlock()
	dir := os.Getenv(matrixModulesEnv)
	if dir == "" {
		return fmt.Errorf("load module %s: not in the kernel matrix (%s unset)", name, matrixModulesEnv)
	}
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return fmt.Errorf("load module %s: %w (does the package's testdata/kmatrix-modules name it?)", name, err)
	}
	var idx moduleIndex
	if err := json.Unmarshal(b, &idx); err != nil {
		return fmt.Errorf("load module %s: %s: %w", name, dir, err)
	}
	name = moduleName(name)
	m, ok := idx.Modules[name]
	if !ok {
		return fmt.Errorf("load module %s: not in the guest; name it in the package's testdata/kmatrix-modules (\"copy %s\")", name, name)
	}
	for _, d := range m.Deps {
		if err := finit(dir, d, idx.Modules[d].File, ""); err != nil {
			return fmt.Errorf("load module %s: dependency: %w", name, err)
		}
	}
	if err := finit(dir, name, m.File, params); err != nil {
		return fmt.Errorf("load module %s: %w", name, err)
	}
	return nil
}

func finit(dir, name, file, params string) error {
	if file == "" || ModuleLoaded(name) {
		return nil // built in, or loaded
	}
	f, err := os.Open(filepath.Join(dir, file))
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if !strings.HasSuffix(file, ".ko") {
		flags = unix.MODULE_INIT_COMPRESSED_FILE // CONFIG_MODULE_DECOMPRESS, Linux 5.17
	}
	if err := unix.FinitModule(int(f.Fd()), params, flags); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("finit_module %s %q: %w", file, params, err)
	}
	return nil
}

// UnloadModule removes a loaded module (delete_module with O_NONBLOCK, as
// rmmod does). A module that is not loaded is not an error.
func UnloadModule(name string) error {
	name = moduleName(name)
	if err := unix.DeleteModule(name, unix.O_NONBLOCK); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unload module %s: %w", name, err)
	}
	return nil
}

// ModuleLoaded reports whether the kernel has the module loaded or built in
// (/sys/module/NAME exists).
func ModuleLoaded(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/module", moduleName(name)))
	return err == nil
}

func moduleName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// RequireModule makes sure module name is loaded. Outside the matrix it
// skips the test if the module is not loaded, saying that the test runs
// only in the kernel matrix; inside the matrix it loads it with LoadModule
// and fails the test if that fails.
func RequireModule(t testing.TB, name, params string) {
	t.Helper()
	if ModuleLoaded(name) {
		return
	}
	if !InMatrix() {
		t.Skipf("runs only in the kernel matrix (.ci/matrix), which provides the kernel module %s: kernel feature missing here: %s is not loaded", name, name)
	}
	if err := LoadModule(name, params); err != nil {
		t.Fatalf("in the kernel matrix: %v", err)
	}
}
