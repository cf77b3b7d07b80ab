// Package testutil holds what the connector's tests share: checks that skip a
// test only when a privilege or a kernel feature is really missing (and say
// which), helper child processes made by re-executing the test binary, and
// leak checks.
//
// # Skipping
//
// The Require functions skip the calling test with a message naming the
// missing privilege or kernel feature. They never skip for any other reason:
// CI runs the tests as root in the initial namespaces, where every one of
// them must run.
//
// # Helper processes
//
// Tests must not depend on programs outside the test binary (the same
// binaries run inside minimal VMs that contain nothing else), so a test that
// needs a child process re-executes its own binary with an environment
// variable naming a helper. The package's TestMain calls Main, which runs
// that helper instead of the tests:
//
//	func TestMain(m *testing.M) {
//		testutil.Main(m, map[string]testutil.HelperFunc{"nocap": nocapHelper})
//	}
//
// and a test runs it to completion with RunHelper or RunHelperExit, or starts
// it with StartHelper (HelperCommand for more control) and watches its
// output line by line while it runs. The example programs' tests run the
// program this way: its main is a HelperFunc.
//
// # Kernel
//
// KernelVersion and KernelAtLeast read the running kernel's version;
// RequireAgent and RequireProcEvents check the kernel agents registered with
// the connector through connector.Agents, the module's one reader of
// /proc/net/connector. InMatrix, LoadModule and RequireModule serve the
// tests that the kernel matrix (internal/kmatrix) runs with kernel modules.
//
// Only external test packages of the root package (connector_test) may
// import testutil, since it imports package connector.
package testutil

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// HelperEnv is the environment variable that selects a helper in a
// re-executed test binary.
const HelperEnv = "CONNECTOR_TEST_HELPER"

// NobodyEnv is the environment variable that, set to 1 in a helper's
// environment (AsNobody does it), makes Main and MainFunc switch the helper
// process to uid and gid 65534 (BecomeNobody) before the helper runs.
const NobodyEnv = "CONNECTOR_TEST_NOBODY"

// AsNobody makes cmd, a helper command (HelperCommand), run its helper as
// uid and gid 65534 without capabilities, and returns it. The test process
// must be root (RequireRoot).
func AsNobody(cmd *exec.Cmd) *exec.Cmd {
	cmd.Env = append(cmd.Env, NobodyEnv+"=1")
	return cmd
}

// RequireRoot skips the test unless it runs as root, which it needs to
// switch a helper to another user (AsNobody); why says what for.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("privilege missing: the test needs root %s", why)
	}
}

// A HelperFunc is the body of a helper process. It gets the arguments given
// to RunHelper and returns the process's exit status. What it writes to
// stdout is returned to the test; stderr is passed through.
type HelperFunc func(args []string) int

// Main runs the helper named by HelperEnv, if it is set, and exits with its
// status; otherwise it runs the tests. Call it from TestMain.
func Main(m *testing.M, helpers map[string]HelperFunc) {
	MainFunc(m, func(name string, args []string) int {
		fn, ok := helpers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "testutil: unknown helper %q\n", name)
			return 2
		}
		return fn(args)
	})
}

// MainFunc is Main for a package whose helpers are one function switching
// on the helper's name: it runs helper(name, args) if HelperEnv names a
// helper, and the tests otherwise.
func MainFunc(m *testing.M, helper func(name string, args []string) int) {
	if name, ok := os.LookupEnv(HelperEnv); ok {
		if os.Getenv(NobodyEnv) == "1" {
			if err := BecomeNobody(); err != nil {
				fmt.Fprintf(os.Stderr, "testutil: helper %q: becoming uid 65534: %v\n", name, err)
				os.Exit(3)
			}
		}
		os.Exit(helper(name, helperArgs()))
	}
	os.Exit(m.Run())
}

// helperArgs returns the arguments after the "--" that RunHelper puts
// between the test binary's own flags and the helper's.
func helperArgs() []string {
	for i, a := range os.Args {
		if a == "--" {
			return os.Args[i+1:]
		}
	}
	return nil
}

// RunHelper runs the test binary again as the named helper with args, waits
// for it at most timeout, and returns what it wrote to stdout. An error
// means it did not exit with status 0 in time; the error includes its stderr.
func RunHelper(t testing.TB, timeout time.Duration, name string, args ...string) ([]byte, error) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("finding the test binary to re-execute: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, append([]string{"-test.run=^$", "--"}, args...)...)
	cmd.Env = helperEnviron(name)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if ctx.Err() != nil {
		return stdout.Bytes(), fmt.Errorf("helper %q did not finish within %v (stderr: %q)", name, timeout, stderr.String())
	}
	if err != nil {
		return stdout.Bytes(), fmt.Errorf("helper %q: %w (stderr: %q)", name, err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// WaitFor calls cond until it returns true or timeout passes, yielding the
// processor between calls, and reports whether cond came true. Use it only
// for state that offers no event to wait on (the number of goroutines, say).
func WaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

// CheckGoroutines records the number of goroutines and, when the test ends,
// fails it if more remain than before after waiting up to timeout for them
// to exit. Tests using it must not run in parallel with others.
func CheckGoroutines(t testing.TB, timeout time.Duration) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		var now int
		if !WaitFor(timeout, func() bool { now = runtime.NumGoroutine(); return now <= before }) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("goroutine leak: %d goroutines before, %d after; stacks:\n%s", before, now, buf)
		}
	})
}

// CapturedHex reads a file of payloads captured from real kernels, one per
// line with the hex bytes in the last field ("<kernel> <kind> <hex>"; '#'
// starts a comment). A missing file gives nil: seeds are optional.
func CapturedHex(tb testing.TB, path string) [][]byte {
	tb.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fs := strings.Fields(line)
		b, err := hex.DecodeString(fs[len(fs)-1])
		if err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		out = append(out, b)
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return out
}

// KeyValues parses the "key: value" lines a helper printed (the first ": "
// splits each line) into a map, for tests that compare what a helper found
// with what they expect.
func KeyValues(out []byte) map[string]string {
	got := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ": ")
		got[k] = v
	}
	return got
}

// AppendAll appends items to one buffer with appendOne (an Append function
// of the package under test, such as w1.AppendMsg) and fails the test on
// the first error.
func AppendAll[T any](t testing.TB, appendOne func([]byte, T) ([]byte, error), items ...T) []byte {
	t.Helper()
	var b []byte
	for i, it := range items {
		var err error
		if b, err = appendOne(b, it); err != nil {
			t.Fatalf("item %d: %v", i, err)
		}
	}
	return b
}
