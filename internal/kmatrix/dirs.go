package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// selfModule is this module's path.
const selfModule = "github.com/cnlink/connector/internal/kmatrix"

// moduleRoot walks up from dir to the nearest directory holding a go.mod and
// returns that directory and the module path it declares.
func moduleRoot(dir string) (root, modPath string, err error) {
	dir, err = filepath.Abs(dir)
	if err != nil {
		return "", "", err
	}
	for {
		if p, err := readModulePath(filepath.Join(dir, "go.mod")); err == nil {
			return dir, p, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", "", errors.New("no go.mod in any parent directory")
		}
		dir = parent
	}
}

func readModulePath(gomod string) (string, error) {
	f, err := os.Open(gomod)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`), nil
		}
	}
	return "", fmt.Errorf("%s: no module line", gomod)
}

// locate finds this runner's module directory (where the guest init is
// built) and the repository root (where -pkgs patterns are resolved; the
// module that encloses this one), from the working directory: either of the
// two, or any directory below them. root, if not empty, overrides the
// repository root.
func locate(root string) (selfDir, repoRoot string, err error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", "", err
	}
	dir, mod, err := moduleRoot(wd)
	if err != nil {
		return "", "", fmt.Errorf("kmatrix: %v: run it from the repository (.ci/matrix, or go run -C internal/kmatrix .)", err)
	}
	switch {
	case mod == selfModule:
		selfDir = dir
	default:
		// The repository's main module: this module lives below it.
		selfDir = filepath.Join(dir, "internal", "kmatrix")
		if p, err := readModulePath(filepath.Join(selfDir, "go.mod")); err != nil || p != selfModule {
			return "", "", fmt.Errorf("kmatrix: %s is module %s, and %s does not hold %s: run it from the repository (.ci/matrix, or go run -C internal/kmatrix .)", dir, mod, selfDir, selfModule)
		}
		if root == "" {
			root = dir
		}
	}
	if root == "" {
		if root, _, err = moduleRoot(filepath.Dir(selfDir)); err != nil {
			return "", "", fmt.Errorf("kmatrix: the module enclosing %s: %v (set -root)", selfDir, err)
		}
	}
	if root, err = filepath.Abs(root); err != nil {
		return "", "", err
	}
	return selfDir, root, nil
}

// resolvePattern turns a -pkgs pattern into the directory to run go list in
// (the root of the module holding it) and the pattern as seen from there.
// Relative patterns are relative to root; a pattern inside a nested module
// (./internal/kmatrix/testdata/smoke, ./benchmarks/...) is resolved in that
// module. Import paths are resolved in root.
func resolvePattern(root, pat string) (dir, rel string, err error) {
	if !strings.HasPrefix(pat, ".") && !filepath.IsAbs(pat) {
		return root, pat, nil
	}
	base, dots := strings.CutSuffix(pat, "/...")
	abs := base
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(root, base)
	}
	dir, _, err = moduleRoot(abs)
	if err != nil {
		return "", "", fmt.Errorf("%s: %v", pat, err)
	}
	r, err := filepath.Rel(dir, abs)
	if err != nil {
		return "", "", err
	}
	rel = "./" + filepath.ToSlash(r)
	if r == "." {
		rel = "."
	}
	if dots {
		rel += "/..."
	}
	return dir, rel, nil
}
