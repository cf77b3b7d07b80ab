package dmlog

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// loadTestModules loads the modules of testdata/kmatrix-modules that are not
// loaded yet, from the directory the kernel matrix copies them to
// ($KMATRIX_MODULES). The matrix's init normally loads them before the test
// binary runs; this covers a runner that only copies them.
func loadTestModules() error {
	dir := os.Getenv("KMATRIX_MODULES")
	if dir == "" {
		return errors.New("KMATRIX_MODULES is not set")
	}
	f, err := os.Open("testdata/kmatrix-modules")
	if err != nil {
		return err
	}
	defer f.Close()
	loaded, _ := os.ReadFile("/proc/modules")
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fs := strings.Fields(line)
		if len(fs) == 0 || fs[0] == "copy" {
			continue
		}
		name := strings.ReplaceAll(fs[0], "-", "_")
		if strings.Contains(string(loaded), "\n"+name+" ") || strings.HasPrefix(string(loaded), name+" ") {
			continue
		}
		p, err := findModuleFile(dir, name)
		if err != nil {
			return err
		}
		if err := finitModule(p, strings.Join(fs[1:], " ")); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
	}
	return sc.Err()
}

func findModuleFile(dir, name string) (string, error) {
	var found string
	_ = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || found != "" {
			return nil
		}
		base := strings.ReplaceAll(e.Name(), "-", "_")
		for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
			if base == name+ext {
				found = p
				return fs.SkipAll
			}
		}
		return nil
	})
	if found == "" {
		return "", fmt.Errorf("no module file for %s under %s", name, dir)
	}
	return found, nil
}

func finitModule(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if !strings.HasSuffix(path, ".ko") {
		flags = 4 // MODULE_INIT_COMPRESSED_FILE
	}
	if err := unix.FinitModule(int(f.Fd()), params, flags); err != nil {
		return fmt.Errorf("finit_module %s: %w", path, err)
	}
	return nil
}
