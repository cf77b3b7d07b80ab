// Package guest holds what the kernel matrix runner and the init it puts into
// the guest's initramfs must agree on: the plan file and the marker lines the
// init prints on the serial console.
package guest

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Paths inside the initramfs.
const (
	PlanPath = "/kmatrix/plan.json" // the Plan, as JSON
	BinDir   = "/kmatrix/bin"       // test binaries, one file per package
	WorkDir  = "/kmatrix/work"      // per-binary working directories
	// ModulesDir holds the kernel modules the packages asked for, with
	// their dependencies, and ModuleIndexName, their ModuleIndex. The
	// init exports it to the test binaries as KMATRIX_MODULES.
	ModulesDir      = "/kmatrix/modules"
	ModuleIndexName = "index.json"
)

// ModuleIndex describes the modules in ModulesDir: one kernel's, since the
// runner appends a per-kernel archive of them to the shared initramfs.
// Tests read it too (the root module's internal/testutil keeps its own copy
// of this JSON shape).
type ModuleIndex struct {
	Release string            `json:"release"` // uname -r of the kernel they belong to
	Modules map[string]Module `json:"modules"` // by name, '-' written as '_'
}

// Module is one module file and what must be loaded before it.
type Module struct {
	File string `json:"file"` // base name in ModulesDir (.ko, .ko.xz, .ko.zst)
	// Deps are the names of the modules it depends on, directly or not, in
	// load order (each after its own dependencies).
	Deps []string `json:"deps,omitempty"`
}

// ModuleName normalizes a module name as the kernel does ('-' is '_').
func ModuleName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// ModuleLoad is a module the init loads (with its dependencies first, as
// the index gives them) before a binary runs.
type ModuleLoad struct {
	Name   string `json:"name"`
	Params string `json:"params,omitempty"` // module parameters, e.g. "chip_addr=0x18"
}

// KernelParam is the kernel command-line parameter that names the kernel
// under test (for example kmatrix.kernel=6.1). The init passes its value to
// the test binaries in the KMATRIX_KERNEL environment variable.
const KernelParam = "kmatrix.kernel"

// Plan tells the guest init what to run.
type Plan struct {
	Binaries []Binary `json:"binaries"`
	// Env is the environment of every test binary (KEY=value).
	Env []string `json:"env"`
}

// Binary is one test binary to run.
type Binary struct {
	Name string   `json:"name"` // short unique name, no spaces
	Path string   `json:"path"` // absolute path of the executable
	Dir  string   `json:"dir"`  // working directory
	Args []string `json:"args"` // arguments after argv[0]
	// Timeout is how long the binary may run before the init kills its
	// process group.
	Timeout time.Duration `json:"timeout"`
	// Modules are loaded, in order, right before the binary runs (from
	// its package's testdata/kmatrix-modules). Modules stay loaded for the
	// binaries after it.
	Modules []ModuleLoad `json:"modules,omitempty"`
	// UID, if not 0, runs the binary as that user and group, with no
	// supplementary groups and so no capabilities (-unprivileged).
	UID int `json:"uid,omitempty"`
}

// UnprivilegedSuffix ends the name of a binary's unprivileged run.
const UnprivilegedSuffix = "-nobody"

// Marker prefixes. Each marker is printed by the init on a line of its own;
// the runner finds it anywhere in a console line, since kernel messages can
// be interleaved with user output.
const (
	MarkBooted = "KMATRIX-BOOTED" // KMATRIX-BOOTED <uname -r> uptime=<seconds>
	MarkBegin  = "KMATRIX-BEGIN"  // KMATRIX-BEGIN <name>
	MarkResult = "KMATRIX-RESULT" // KMATRIX-RESULT pass|fail <name> <exit code> <duration> [reason]
	MarkDone   = "KMATRIX-DONE"   // KMATRIX-DONE pass|fail passed=N failed=M
	MarkError  = "KMATRIX-ERROR"  // KMATRIX-ERROR <message>: the init itself failed
	MarkModule = "KMATRIX-MODULE" // KMATRIX-MODULE <name> loaded|failed <detail>
)

// Result is one binary's outcome, as carried by a MarkResult line.
type Result struct {
	Pass     bool
	Name     string
	ExitCode int // -1 if the binary did not exit by itself
	Duration time.Duration
	Reason   string // empty, "timeout" or "start: ..." and similar
}

// String formats r as a MarkResult line, without a line terminator.
func (r Result) String() string {
	verdict := "fail"
	if r.Pass {
		verdict = "pass"
	}
	s := fmt.Sprintf("%s %s %s %d %s", MarkResult, verdict, r.Name, r.ExitCode, r.Duration.Round(time.Millisecond))
	if r.Reason != "" {
		s += " " + r.Reason
	}
	return s
}

// ParseResult parses a MarkResult line as written by Result.String. The line
// may carry anything before the marker.
func ParseResult(line string) (Result, bool) {
	i := strings.Index(line, MarkResult+" ")
	if i < 0 {
		return Result{}, false
	}
	f := strings.Fields(line[i+len(MarkResult):])
	if len(f) < 4 || (f[0] != "pass" && f[0] != "fail") {
		return Result{}, false
	}
	code, err := strconv.Atoi(f[2])
	if err != nil {
		return Result{}, false
	}
	d, err := time.ParseDuration(f[3])
	if err != nil {
		return Result{}, false
	}
	return Result{
		Pass:     f[0] == "pass",
		Name:     f[1],
		ExitCode: code,
		Duration: d,
		Reason:   strings.Join(f[4:], " "),
	}, true
}

// After returns the text following marker in line, and whether the marker
// was there at all.
func After(line, marker string) (string, bool) {
	i := strings.Index(line, marker)
	if i < 0 {
		return "", false
	}
	rest := line[i+len(marker):]
	if rest != "" && rest[0] != ' ' {
		return "", false
	}
	return strings.TrimSpace(rest), true
}
