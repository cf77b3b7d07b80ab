package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cnlink/connector/internal/kmatrix/guest"
)

// ModulesFile is the file in a test package's directory that names the
// kernel modules its tests need in the matrix.
const ModulesFile = "testdata/kmatrix-modules"

// moduleLine is one line of a ModulesFile:
//
//	NAME [PARAM=VALUE ...]   load NAME (dependencies first) before the binary runs
//	copy NAME                only put NAME and its dependencies into the guest;
//	                         the test loads it itself (testutil.LoadModule)
type moduleLine struct {
	name   string // as written
	params string
	load   bool
}

// readModuleLines parses a package's ModulesFile; a missing file is no
// modules.
func readModuleLines(pkgDir string) ([]moduleLine, error) {
	b, err := os.ReadFile(filepath.Join(pkgDir, ModulesFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return parseModuleLines(string(b))
}

func parseModuleLines(s string) ([]moduleLine, error) {
	var out []moduleLine
	for i, line := range strings.Split(s, "\n") {
		if j := strings.IndexByte(line, '#'); j >= 0 {
			line = line[:j]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m := moduleLine{load: true}
		if f[0] == "copy" {
			if len(f) != 2 {
				return nil, fmt.Errorf("%s line %d: want \"copy NAME\"", ModulesFile, i+1)
			}
			m.load = false
			f = f[1:]
		}
		m.name = f[0]
		for _, p := range f[1:] {
			if k, _, ok := strings.Cut(p, "="); !ok || k == "" {
				return nil, fmt.Errorf("%s line %d: parameter %q is not NAME=VALUE", ModulesFile, i+1, p)
			}
		}
		if !validModuleName(m.name) {
			return nil, fmt.Errorf("%s line %d: bad module name %q", ModulesFile, i+1, m.name)
		}
		m.params = strings.Join(f[1:], " ")
		out = append(out, m)
	}
	return out, nil
}

func validModuleName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// moduleFileName returns the module name of a file name such as
// dm-mod.ko.xz, and whether it is a module file at all.
func moduleFileName(base string) (string, bool) {
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if n, ok := strings.CutSuffix(base, ext); ok && n != "" {
			return guest.ModuleName(n), true
		}
	}
	return "", false
}

// modulesPackages names the packages that carry the kernel's modules: the
// image package up to 6.18, linux-modules-* from 6.19 on.
func modulesPackages(k kernelPkg) kernelPkg {
	if strings.HasPrefix(k.Packages[0], "linux-binary-") {
		// linux-base carries modules.builtin.
		k.Packages = []string{"linux-modules-" + k.ABI + "-amd64", "linux-base-" + k.ABI + "-amd64"}
	}
	return k
}

// ensureModules makes sure the entry's module cache (<entry>/modules) holds
// the named modules and their dependencies and returns its index. Modules
// are resolved on the host from the kernel's own packages: each module's
// .modinfo "depends=" names what it needs, recursively. The cache only grows;
// a name it lacks costs one download and scan of the packages.
func ensureModules(ctx context.Context, c config, repo *aptRepo, tools *toolbox, e *kernelEntry, names []string, logf func(string, ...any)) (*guest.ModuleIndex, error) {
	dir := e.path("modules")
	idx := &guest.ModuleIndex{Modules: map[string]guest.Module{}}
	if b, err := os.ReadFile(filepath.Join(dir, guest.ModuleIndexName)); err == nil {
		if err := json.Unmarshal(b, idx); err != nil || idx.Modules == nil {
			idx = &guest.ModuleIndex{Modules: map[string]guest.Module{}}
		}
	}
	var missing []string
	for _, n := range names {
		if _, ok := idx.Modules[guest.ModuleName(n)]; !ok {
			missing = append(missing, guest.ModuleName(n))
		}
	}
	if len(missing) == 0 {
		return idx, nil
	}
	if c.offline {
		return nil, fmt.Errorf("modules %s of %s are not in the cache (-offline)", strings.Join(missing, ", "), e.Pkg.Version)
	}
	start := time.Now()
	tmpRoot := filepath.Join(c.cacheDir, "tmp")
	if err := os.MkdirAll(tmpRoot, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(tmpRoot, "modules-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	mp := modulesPackages(e.Pkg)
	debs, err := repo.download(ctx, mp, tmp)
	if err != nil {
		return nil, fmt.Errorf("modules: %w", err)
	}
	// Resolve: scan the packages for the wanted files, read their
	// dependencies, and scan again while new names turn up.
	files := map[string][]byte{} // name -> file contents
	bases := map[string]string{} // name -> base name
	direct := map[string][]string{}
	builtin := map[string]bool{}
	want := slices.Clone(missing)
	for pass := 0; len(want) > 0; pass++ {
		if pass > 8 {
			return nil, fmt.Errorf("modules: dependencies of %s did not resolve in 8 passes", strings.Join(missing, ", "))
		}
		wantSet := map[string]bool{}
		for _, n := range want {
			wantSet[n] = true
		}
		for _, d := range debs {
			if err := scanModules(ctx, d, wantSet, files, bases, builtin, &idx.Release); err != nil {
				return nil, err
			}
		}
		var next []string
		for _, n := range want {
			if builtin[n] {
				continue
			}
			b, ok := files[n]
			if !ok {
				return nil, fmt.Errorf("modules: %s is neither a module nor built into %s %s", n, e.Pkg.Name(), e.Pkg.Version)
			}
			deps, err := moduleDepends(ctx, bases[n], b, tools)
			if err != nil {
				return nil, fmt.Errorf("modules: %s: %w", bases[n], err)
			}
			direct[n] = deps
			for _, d := range deps {
				_, known := idx.Modules[d]
				if _, have := files[d]; !have && !known && !builtin[d] && !slices.Contains(next, d) {
					next = append(next, d)
				}
			}
		}
		want = next
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for n, b := range files {
		if err := writeFileAtomic(filepath.Join(dir, bases[n]), b); err != nil {
			return nil, err
		}
	}
	// Load order per module: its dependencies' orders, then each
	// dependency, without repeats.
	var order func(n string, seen map[string]bool) ([]string, error)
	order = func(n string, seen map[string]bool) ([]string, error) {
		if seen[n] {
			return nil, fmt.Errorf("modules: dependency cycle through %s", n)
		}
		seen[n] = true
		defer delete(seen, n)
		var deps []string
		var ds []string
		if m, ok := idx.Modules[n]; ok && direct[n] == nil {
			return m.Deps, nil
		}
		ds = direct[n]
		for _, d := range ds {
			if builtin[d] {
				continue
			}
			sub, err := order(d, seen)
			if err != nil {
				return nil, err
			}
			for _, x := range append(sub, d) {
				if !slices.Contains(deps, x) {
					deps = append(deps, x)
				}
			}
		}
		return deps, nil
	}
	for n := range files {
		deps, err := order(n, map[string]bool{})
		if err != nil {
			return nil, err
		}
		idx.Modules[n] = guest.Module{File: bases[n], Deps: deps}
	}
	for n := range builtin {
		if _, ok := idx.Modules[n]; !ok && slices.Contains(missing, n) {
			idx.Modules[n] = guest.Module{} // built in: nothing to load
		}
	}
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(dir, guest.ModuleIndexName), append(b, '\n')); err != nil {
		return nil, err
	}
	got := make([]string, 0, len(files))
	for n := range files {
		got = append(got, n)
	}
	sort.Strings(got)
	logf("resolved modules %s (for %s) in %s", strings.Join(got, " "), strings.Join(missing, " "), time.Since(start).Round(100*time.Millisecond))
	return idx, nil
}

// scanModules reads a kernel package's files and keeps the module files
// named in want, and the names listed in modules.builtin.
func scanModules(ctx context.Context, deb string, want map[string]bool, files map[string][]byte, bases map[string]string, builtin map[string]bool, release *string) error {
	return walkDeb(ctx, deb, func(h *tar.Header, r io.Reader) (bool, error) {
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		rest, ok := strings.CutPrefix(strings.TrimPrefix(name, "usr/"), "lib/modules/")
		if !ok {
			return false, nil
		}
		rel, sub, ok := strings.Cut(rest, "/")
		if !ok {
			return false, nil
		}
		if sub == "modules.builtin" {
			sc := bufio.NewScanner(r)
			for sc.Scan() {
				if n, ok := moduleFileName(path.Base(strings.TrimSpace(sc.Text()))); ok {
					builtin[n] = true
				}
			}
			return false, sc.Err()
		}
		n, ok := moduleFileName(path.Base(sub))
		if !ok || !want[n] {
			return false, nil
		}
		if h.Size > 64<<20 {
			return false, fmt.Errorf("%s: %d bytes", name, h.Size)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			return false, err
		}
		files[n], bases[n] = b, path.Base(sub)
		if *release == "" {
			*release = rel
		}
		return false, nil
	})
}

// moduleDepends returns the "depends=" names of a module's .modinfo
// section, decompressing the file first if needed.
func moduleDepends(ctx context.Context, base string, b []byte, tools *toolbox) ([]string, error) {
	var err error
	switch {
	case strings.HasSuffix(base, ".xz"):
		b, err = decompress(ctx, "xz", b, tools)
	case strings.HasSuffix(base, ".zst"):
		b, err = decompress(ctx, "zstd", b, tools)
	case strings.HasSuffix(base, ".gz"):
		var zr *gzip.Reader
		if zr, err = gzip.NewReader(bytes.NewReader(b)); err == nil {
			b, err = io.ReadAll(io.LimitReader(zr, 256<<20))
		}
	}
	if err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	s := f.Section(".modinfo")
	if s == nil {
		return nil, errors.New("no .modinfo section")
	}
	info, err := s.Data()
	if err != nil {
		return nil, err
	}
	var deps []string
	for _, kv := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			for _, d := range strings.Split(string(v), ",") {
				if d = strings.TrimSpace(d); d != "" {
					deps = append(deps, guest.ModuleName(d))
				}
			}
		}
	}
	return deps, nil
}

// kernelInitramfs returns the initramfs for one kernel: the shared one, or,
// if the binaries need modules, a copy with an archive of this kernel's
// modules (the closure of the names asked for, read from modDir) and their
// index appended. The kernel unpacks concatenated compressed cpio archives
// in order.
func kernelInitramfs(b *buildResult, idx *guest.ModuleIndex, modDir, workDir, label string) (string, error) {
	if len(b.moduleNames) == 0 {
		return b.initramfs, nil
	}
	sub := &guest.ModuleIndex{Release: idx.Release, Modules: map[string]guest.Module{}}
	for _, n := range b.moduleNames {
		m, ok := idx.Modules[n]
		if !ok {
			return "", fmt.Errorf("module %s missing from the index", n)
		}
		sub.Modules[n] = m
		for _, d := range m.Deps {
			dm, ok := idx.Modules[d]
			if !ok {
				return "", fmt.Errorf("%s's dependency %s missing from the index", n, d)
			}
			sub.Modules[d] = dm
		}
	}
	common, err := os.ReadFile(b.initramfs)
	if err != nil {
		return "", err
	}
	name := filepath.Join(workDir, "initramfs-"+sanitizeName(label)+".cpio.gz")
	f, err := os.Create(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.Write(common); err != nil {
		return "", err
	}
	zw, err := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if err != nil {
		return "", err
	}
	cw := &cpioWriter{w: zw}
	dir := strings.TrimPrefix(guest.ModulesDir, "/")
	if err := cw.Dir(dir, 0o755); err != nil {
		return "", err
	}
	names := make([]string, 0, len(sub.Modules))
	for n := range sub.Modules {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		m := sub.Modules[n]
		if m.File == "" {
			continue // built in
		}
		data, err := os.ReadFile(filepath.Join(modDir, m.File))
		if err != nil {
			return "", err
		}
		if err := cw.File(path.Join(dir, m.File), 0o644, data); err != nil {
			return "", err
		}
	}
	ij, err := json.MarshalIndent(sub, "", "  ")
	if err != nil {
		return "", err
	}
	if err := cw.File(path.Join(dir, guest.ModuleIndexName), 0o644, ij); err != nil {
		return "", err
	}
	if err := cw.Close(); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	return name, f.Close()
}
