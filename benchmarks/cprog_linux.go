//go:build linux

package main

import (
	"embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// The suite's C programs (csrc/): the storm generator and the C contestants.
// They are compiled, once per suite process, with the machine's C compiler
// ($CC, else cc, else gcc) into a temporary directory, for the machine's own
// architecture whatever GOARCH the suite was built for; so the module needs
// no cgo, and a GOARCH=386 suite runs the same C programs as an amd64 one.
//
//go:embed csrc/*.c
var csrc embed.FS

// cContestants are the receivers written in C, all in csrc/crecv.c.
var cContestants = map[string]bool{"c-recv": true, "c-recvmmsg": true}

var cBuild struct {
	once sync.Once
	dir  string
	err  error
}

// cCompiler returns the C compiler to use.
func cCompiler() (string, error) {
	if cc := os.Getenv("CC"); cc != "" {
		if p, err := exec.LookPath(strings.Fields(cc)[0]); err == nil {
			return p, nil
		}
	}
	for _, cc := range []string{"cc", "gcc", "clang"} {
		if p, err := exec.LookPath(cc); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no C compiler found ($CC, cc, gcc or clang): the suite compiles its storm generator and C contestants (apt-get install gcc)")
}

// cProgram returns the path of the compiled C program name (storm or crecv),
// compiling every program the first time.
func cProgram(name string) (string, error) {
	cBuild.once.Do(func() { cBuild.dir, cBuild.err = buildC() })
	if cBuild.err != nil {
		return "", cBuild.err
	}
	return filepath.Join(cBuild.dir, name), nil
}

func buildC() (string, error) {
	cc, err := cCompiler()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "cnbench-")
	if err != nil {
		return "", err
	}
	ents, err := csrc.ReadDir("csrc")
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		src, err := csrc.ReadFile("csrc/" + e.Name())
		if err != nil {
			return "", err
		}
		c := filepath.Join(dir, e.Name())
		if err := os.WriteFile(c, src, 0o644); err != nil {
			return "", err
		}
		out := filepath.Join(dir, strings.TrimSuffix(e.Name(), ".c"))
		cmd := exec.Command(cc, "-O2", "-Wall", "-pthread", "-o", out, c)
		if b, err := cmd.CombinedOutput(); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("compile %s with %s: %v\n%s", e.Name(), cc, err, b)
		}
	}
	return dir, nil
}

// removeC removes the compiled C programs.
func removeC() {
	if cBuild.dir != "" {
		os.RemoveAll(cBuild.dir)
	}
}
