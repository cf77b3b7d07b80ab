//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cnlink/connector/internal/kmatrix/guest"
	"golang.org/x/sys/unix"
)

// modules loads kernel modules from guest.ModulesDir. The root module's
// internal/testutil.LoadModule does the same inside tests (a deliberate
// second copy: the two modules share no code).
type modules struct {
	idx    *guest.ModuleIndex
	idxErr error
	loaded map[string]bool
}

func newModules() *modules {
	m := &modules{loaded: map[string]bool{}}
	b, err := os.ReadFile(filepath.Join(guest.ModulesDir, guest.ModuleIndexName))
	if err != nil {
		m.idxErr = err
		return m
	}
	m.idx = &guest.ModuleIndex{}
	if err := json.Unmarshal(b, m.idx); err != nil {
		m.idx, m.idxErr = nil, err
	}
	return m
}

// load loads name's dependencies (without parameters), then name with
// params. A module the kernel already has is left as it is.
func (m *modules) load(name, params string) error {
	if m.idx == nil {
		return fmt.Errorf("no module index: %v", m.idxErr)
	}
	mod, ok := m.idx.Modules[name]
	if !ok {
		return fmt.Errorf("%s is not in the initramfs", name)
	}
	for _, d := range mod.Deps {
		if err := m.loadOne(d, ""); err != nil {
			return fmt.Errorf("dependency of %s: %w", name, err)
		}
	}
	return m.loadOne(name, params)
}

func (m *modules) loadOne(name, params string) error {
	if m.loaded[name] {
		return nil
	}
	mod, ok := m.idx.Modules[name]
	if !ok {
		return fmt.Errorf("%s is not in the initramfs", name)
	}
	if mod.File == "" { // built into the kernel
		m.loaded[name] = true
		return nil
	}
	f, err := os.Open(filepath.Join(guest.ModulesDir, mod.File))
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if !strings.HasSuffix(mod.File, ".ko") {
		// Compressed (Debian's from 6.12 on): the kernel decompresses
		// it (CONFIG_MODULE_DECOMPRESS).
		flags |= unix.MODULE_INIT_COMPRESSED_FILE
	}
	err = unix.FinitModule(int(f.Fd()), params, flags)
	switch {
	case errors.Is(err, unix.EEXIST):
		say("%s %s already loaded", guest.MarkModule, name)
	case err != nil:
		say("%s %s failed %s: %v", guest.MarkModule, name, mod.File, err)
		return fmt.Errorf("finit_module %s %q: %w", mod.File, params, err)
	default:
		say("%s %s loaded %s", guest.MarkModule, name, params)
	}
	m.loaded[name] = true
	return nil
}
