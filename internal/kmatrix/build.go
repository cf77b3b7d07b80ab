package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/cnlink/connector/internal/kmatrix/guest"
)

// defaultInitPkg is the import path of the guest init, used if the runner's
// own path cannot be read from its build information.
const defaultInitPkg = "github.com/cnlink/connector/internal/kmatrix/guestinit"

func initPkg() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Path != "" && bi.Path != "command-line-arguments" {
		return bi.Path + "/guestinit"
	}
	return defaultInitPkg
}

// goEnv is the environment of every go command: static binaries for the
// guest's architecture.
func goEnv() []string {
	return append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
}

// goCmd runs go in dir (a module's root).
func goCmd(ctx context.Context, dir string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, "go", args...)
	c.Dir = dir
	c.Env = goEnv()
	c.WaitDelay = 5 * time.Second
	return c
}

// testPkg is a package named by -pkgs, as go list sees it.
type testPkg struct {
	ImportPath   string
	Dir          string
	TestGoFiles  []string
	XTestGoFiles []string
	Error        *struct{ Err string }

	modDir string // root of the module holding it: where it is built
	name   string // short name of its test binary
}

func (p testPkg) hasTests() bool { return len(p.TestGoFiles)+len(p.XTestGoFiles) > 0 }

// listPackages expands the -pkgs patterns with go list. Patterns that match
// nothing, directories without Go files and packages without test files are
// reported through notef and left out; packages that do not load are
// returned with Error set.
func listPackages(ctx context.Context, root string, patterns []string, notef func(string, ...any)) ([]testPkg, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var pkgs []testPkg
	seen := map[string]bool{}
	// One pattern at a time, so that a pattern naming a missing directory
	// does not hide the others.
	for _, pat := range patterns {
		modDir, rel, err := resolvePattern(root, pat)
		if err != nil {
			return nil, err
		}
		c := goCmd(ctx, modDir, "list", "-e", "-json=ImportPath,Dir,TestGoFiles,XTestGoFiles,Error", rel)
		var stderr bytes.Buffer
		c.Stderr = &stderr
		out, err := c.Output()
		if err != nil {
			msg := strings.TrimSpace(stderr.String())
			if isNoPackage(msg) {
				notef("skipping %s: %s", pat, firstLine(msg))
				continue
			}
			return nil, fmt.Errorf("go list %s: %v\n%s", pat, err, msg)
		}
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			notef("go list %s: %s", pat, firstLine(msg))
		}
		dec := json.NewDecoder(bytes.NewReader(out))
		for {
			var p testPkg
			if err := dec.Decode(&p); err == io.EOF {
				break
			} else if err != nil {
				return nil, fmt.Errorf("go list %s: %w", pat, err)
			}
			if seen[p.ImportPath] {
				continue
			}
			p.modDir = modDir
			seen[p.ImportPath] = true
			switch {
			case p.Error != nil && isNoPackage(p.Error.Err):
				notef("skipping %s: %s", pat, firstLine(p.Error.Err))
			case p.Error == nil && !p.hasTests():
				notef("skipping %s: no test files", p.ImportPath)
			default:
				pkgs = append(pkgs, p)
			}
		}
	}
	nameBinaries(pkgs)
	return pkgs, nil
}

func isNoPackage(msg string) bool {
	for _, s := range []string{"no Go files", "matched no packages", "directory not found", "cannot find package", "is not in std", "build constraints exclude all Go files"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// nameBinaries gives each package a short unique name: the last element of
// its import path, or more elements joined with '-' where that collides.
func nameBinaries(pkgs []testPkg) {
	n := make([]int, len(pkgs)) // path elements used per package
	for i := range n {
		n[i] = 1
	}
	for range 64 {
		count := map[string]int{}
		for i := range pkgs {
			el := strings.Split(pkgs[i].ImportPath, "/")
			k := min(n[i], len(el))
			pkgs[i].name = sanitizeName(strings.Join(el[len(el)-k:], "-"))
			count[pkgs[i].name]++
		}
		dup := false
		for i := range pkgs {
			if count[pkgs[i].name] > 1 {
				n[i]++
				dup = true
			}
		}
		if !dup {
			return
		}
	}
}

// buildResult is what goes into the VMs.
type buildResult struct {
	initramfs string
	binaries  []guest.Binary
	failures  []buildFailure // packages that did not build
	size      int64          // initramfs size in bytes
	// moduleNames are the kernel modules the binaries' packages name in
	// testdata/kmatrix-modules (normalized, sorted): each kernel's
	// initramfs gets them with their dependencies.
	moduleNames []string
}

type buildFailure struct {
	pkg, output string
}

type buildOptions struct {
	root        string // where -pkgs patterns are resolved
	selfDir     string // this module's root, where the guest init is built
	patterns    []string
	testArgs    []string
	testTimeout time.Duration
	workDir     string
	// unprivileged adds a run of every binary as uid 65534.
	unprivileged bool
	notef        func(string, ...any)
}

// build compiles the test binaries and the init and writes the initramfs.
func build(ctx context.Context, o buildOptions) (*buildResult, error) {
	start := time.Now()
	pkgs, err := listPackages(ctx, o.root, o.patterns, o.notef)
	if err != nil {
		return nil, err
	}
	binDir := filepath.Join(o.workDir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, err
	}
	res := &buildResult{}
	type built struct {
		pkg  testPkg
		file string
	}
	var ok []built
	for _, p := range pkgs {
		if p.Error != nil {
			res.failures = append(res.failures, buildFailure{p.ImportPath, p.Error.Err})
			continue
		}
		file := filepath.Join(binDir, p.name+".test")
		bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		out, err := goCmd(bctx, p.modDir, "test", "-c", "-o", file, p.ImportPath).CombinedOutput()
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			res.failures = append(res.failures, buildFailure{p.ImportPath, strings.TrimSpace(string(out))})
			continue
		}
		if _, err := os.Stat(file); err != nil {
			o.notef("skipping %s: go test -c wrote no binary", p.ImportPath)
			continue
		}
		ok = append(ok, built{p, file})
	}
	var mods [][]moduleLine
	for _, b := range ok {
		ml, err := readModuleLines(b.pkg.Dir)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.pkg.ImportPath, err)
		}
		mods = append(mods, ml)
		for _, m := range ml {
			if n := guest.ModuleName(m.name); !slices.Contains(res.moduleNames, n) {
				res.moduleNames = append(res.moduleNames, n)
			}
		}
	}
	slices.Sort(res.moduleNames)
	initFile := filepath.Join(binDir, "init")
	ictx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	out, err := goCmd(ictx, o.selfDir, "build", "-trimpath", "-ldflags=-s -w", "-o", initFile, initPkg()).CombinedOutput()
	cancel()
	if err != nil {
		return nil, fmt.Errorf("building the guest init: %v\n%s", err, out)
	}
	if len(ok) == 0 {
		return res, nil
	}

	// The initramfs.
	res.initramfs = filepath.Join(o.workDir, "initramfs.cpio.gz")
	f, err := os.Create(res.initramfs)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zw, err := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	cw := &cpioWriter{w: zw}
	for _, d := range []string{"dev", "proc", "sys", "tmp", "run", "etc", "kmatrix", guest.BinDir, guest.WorkDir} {
		if err := cw.Dir(d, 0o755); err != nil {
			return nil, err
		}
	}
	// The kernel opens /dev/console before starting init.
	if err := cw.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return nil, err
	}
	if err := cw.File("etc/passwd", 0o644, []byte("root:x:0:0:root:/tmp:/init\nnobody:x:65534:65534:nobody:/nonexistent:/init\n")); err != nil {
		return nil, err
	}
	if err := cw.File("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")); err != nil {
		return nil, err
	}
	if err := addFile(cw, "init", initFile); err != nil {
		return nil, err
	}
	plan := guest.Plan{Env: []string{
		"PATH=" + guest.BinDir + ":/usr/bin:/bin",
		"HOME=/tmp",
		"TMPDIR=/tmp",
		"USER=root",
		"LOGNAME=root",
		"TERM=dumb",
		"KMATRIX=1",
		"KMATRIX_MODULES=" + guest.ModulesDir,
	}}
	args := append([]string{}, o.testArgs...)
	if !hasFlag(args, "test.timeout") {
		args = append(args, "-test.timeout="+o.testTimeout.String())
	}
	for i, b := range ok {
		var loads []guest.ModuleLoad
		for _, m := range mods[i] {
			if m.load {
				loads = append(loads, guest.ModuleLoad{Name: guest.ModuleName(m.name), Params: m.params})
			}
		}
		guestBin := path.Join(guest.BinDir, b.pkg.name+".test")
		if err := addFile(cw, guestBin, b.file); err != nil {
			return nil, err
		}
		dir := path.Join(guest.WorkDir, b.pkg.name)
		if err := cw.Dir(dir, 0o755); err != nil {
			return nil, err
		}
		if err := addTestdata(cw, filepath.Join(b.pkg.Dir, "testdata"), path.Join(dir, "testdata"), o.notef); err != nil {
			return nil, err
		}
		res.binaries = append(res.binaries, guest.Binary{
			Name:    b.pkg.name,
			Path:    guestBin,
			Dir:     dir,
			Args:    args,
			Timeout: o.testTimeout,
			Modules: loads,
		})
	}
	if o.unprivileged {
		// Each binary again as nobody, after all root runs (so that the
		// modules are loaded): tests must skip, not fail, without
		// privileges, on every kernel.
		for _, b := range slices.Clone(res.binaries) {
			nb := b
			nb.Name += guest.UnprivilegedSuffix
			nb.Modules = nil
			nb.UID = 65534
			res.binaries = append(res.binaries, nb)
		}
	}
	plan.Binaries = res.binaries
	pj, err := json.MarshalIndent(plan, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := cw.File(guest.PlanPath, 0o644, pj); err != nil {
		return nil, err
	}
	if err := cw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err == nil {
		res.size = st.Size()
	}
	o.notef("built %d test binaries and the initramfs (%d MB) in %s", len(res.binaries), res.size>>20, time.Since(start).Round(100*time.Millisecond))
	return res, f.Close()
}

// hasFlag reports whether args set the test flag name (with one or two
// dashes).
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

func addFile(cw *cpioWriter, name, file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	return cw.File(name, 0o755, b)
}

// maxTestdata bounds what one package's testdata directory may add to the
// initramfs.
const maxTestdata = 64 << 20

// addTestdata copies a package's testdata directory, if any, so that tests
// that read testdata/... (fuzz seed corpora included) find it in their
// working directory.
func addTestdata(cw *cpioWriter, src, dst string, notef func(string, ...any)) error {
	st, err := os.Stat(src)
	if err != nil || !st.IsDir() {
		return nil
	}
	var total int64
	errTooBig := errors.New("too big")
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		name := path.Join(dst, filepath.ToSlash(rel))
		switch {
		case d.IsDir():
			return cw.Dir(name, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return cw.Symlink(name, target)
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			total += info.Size()
			if total > maxTestdata {
				return errTooBig
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return cw.File(name, uint32(info.Mode().Perm()), b)
		}
		return nil
	})
	if errors.Is(err, errTooBig) {
		notef("%s is larger than %d MB; copied only part of it", src, maxTestdata>>20)
		return nil
	}
	return err
}
