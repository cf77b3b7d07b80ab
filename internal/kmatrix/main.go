// Command kmatrix runs the repository's tests inside other Linux kernels
// under qemu: Debian's kernel packages, fetched with apt-get download through
// a private apt configuration, booted with TCG and a small initramfs whose
// init (package guestinit) runs the test binaries and powers off.
//
// It is a module of its own (the library module holds only the library).
// Run it from anywhere in the repository:
//
//	.ci/matrix [flags]
//	go run -C internal/kmatrix . [flags]
//
// See README.md beside this file for the flags, the cache and timings.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cnlink/connector/internal/kmatrix/guest"
)

type config struct {
	kernels        []string
	pkgs           []string
	jobs           int
	timeout        time.Duration
	testTimeout    time.Duration
	testArgs       []string
	cacheDir       string
	verbose        bool
	install        bool
	refresh        bool
	offline        bool
	mem            string
	accel          string
	appendArgs     string
	bzImage        bool
	mirror         string
	securityMirror string
	keep           bool
	failOnSkip     *regexp.Regexp
	root           string // where -pkgs patterns are resolved
	unprivileged   bool
	selfDir        string // this module's directory
}

func defaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "connector-kmatrix")
	}
	return filepath.Join(os.TempDir(), "connector-kmatrix")
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

func parseFlags() config {
	var c config
	kernels := flag.String("kernels", "6.1,6.12,6.18,7.3", "comma-separated kernel versions; each picks the newest Debian package whose version starts with it (6.1, 6.12, 6.12.117, 6.12.117-1~deb12u1)")
	pkgs := flag.String("pkgs", ".,./proc,./examples/...", "comma-separated package patterns whose tests to run, relative to -root; patterns without test files are skipped")
	root := flag.String("root", "", "the repository root, where -pkgs patterns are resolved (default: the module that encloses this one)")
	flag.IntVar(&c.jobs, "j", 2, "kernels booted at the same time (each VM has one vCPU)")
	flag.DurationVar(&c.timeout, "timeout", 5*time.Minute, "hard limit for one VM, boot to power-off; qemu is killed after it")
	flag.DurationVar(&c.testTimeout, "test-timeout", 2*time.Minute, "limit for one test binary in the guest (passed as -test.timeout; the init kills it 15s later)")
	testArgs := flag.String("testflags", "-test.v -test.count=1", "space-separated flags for every test binary, e.g. '-test.v -test.run=Integration'")
	flag.StringVar(&c.cacheDir, "cache", defaultCacheDir(), "cache directory for apt lists and extracted kernels")
	flag.BoolVar(&c.verbose, "v", false, "stream every VM's whole console output")
	flag.BoolVar(&c.install, "install", os.Geteuid() == 0, "install missing host packages (qemu-system-x86, xz-utils, zstd, lz4) with apt-get; default true when running as root")
	flag.BoolVar(&c.refresh, "refresh", false, "run apt-get update on the private lists even if they are less than a day old")
	flag.BoolVar(&c.offline, "offline", false, "use only kernels already in the cache; no apt")
	flag.StringVar(&c.mem, "mem", "1G", "guest memory (qemu -m)")
	flag.StringVar(&c.appendArgs, "append", "", "extra kernel command-line arguments (e.g. loglevel=7 to see the boot)")
	flag.StringVar(&c.accel, "accel", "tcg", "qemu accelerator; kvm only where /dev/kvm runs stock kernels (not on PVM hosts, /sys/module/kvm_pvm)")
	flag.BoolVar(&c.bzImage, "bzimage", false, "boot the bzImage instead of the extracted vmlinux (PVH)")
	flag.StringVar(&c.mirror, "mirror", "", "Debian archive URI for bookworm, trixie and trixie-backports (default: the one the host's apt uses)")
	flag.StringVar(&c.securityMirror, "security-mirror", "", "Debian security archive URI for bookworm-security and trixie-security (default: the one the host's apt uses)")
	flag.BoolVar(&c.unprivileged, "unprivileged", false, "run every test binary a second time as uid 65534 without capabilities (binary name + \"-nobody\"); -fail-on-skip does not apply to those runs")
	failOnSkip := flag.String("fail-on-skip", "", "regular expression: a skipped test whose name matches it fails its kernel (e.g. '^TestIntegration')")
	flag.BoolVar(&c.keep, "keep", false, "keep the work directory (test binaries, initramfs) and print its path")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: .ci/matrix [flags], or go run -C internal/kmatrix . [flags]\n\nRuns the test binaries of -pkgs inside each kernel of -kernels under qemu.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "kmatrix: unexpected arguments %q\n", flag.Args())
		flag.Usage()
		os.Exit(2)
	}
	if *failOnSkip != "" {
		re, err := regexp.Compile(*failOnSkip)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kmatrix: -fail-on-skip: %v\n", err)
			os.Exit(2)
		}
		c.failOnSkip = re
	}
	var err error
	if c.selfDir, c.root, err = locate(*root); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	c.kernels = splitList(*kernels)
	c.pkgs = splitList(*pkgs)
	c.testArgs = strings.Fields(*testArgs)
	for _, k := range c.kernels {
		if k == "host" {
			fmt.Fprintln(os.Stderr, "kmatrix: -kernels host is not supported; run go test on the host for that")
			os.Exit(2)
		}
		if k == "" || (k[0] < '0' || k[0] > '9') {
			fmt.Fprintf(os.Stderr, "kmatrix: bad kernel version %q\n", k)
			os.Exit(2)
		}
	}
	if len(c.kernels) == 0 || len(c.pkgs) == 0 || c.jobs < 1 {
		fmt.Fprintln(os.Stderr, "kmatrix: need at least one kernel, one package and -j >= 1")
		os.Exit(2)
	}
	return c
}

// logger prints whole lines from several goroutines.
type logger struct{ mu sync.Mutex }

func (l *logger) printf(prefix, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range strings.Split(strings.TrimRight(msg, "\n"), "\n") {
		fmt.Fprintf(os.Stdout, "[%s] %s\n", prefix, line)
	}
}

func (l *logger) prefixed(prefix string) func(string, ...any) {
	return func(format string, args ...any) { l.printf(prefix, format, args...) }
}

// kernelRun is everything known about one kernel of the matrix.
type kernelRun struct {
	label string
	entry *kernelEntry
	err   error // fetching or preparing failed
	vm    *vmRun
	total time.Duration // fetch + boot
	// badSkips are skipped tests that -fail-on-skip does not allow.
	badSkips []string
}

func (k *kernelRun) passed() bool {
	return k.err == nil && k.vm != nil && k.vm.passed() && len(k.badSkips) == 0
}

// checkSkips records the skipped tests that re forbids.
func (k *kernelRun) checkSkips(re *regexp.Regexp) {
	if re == nil || k.vm == nil {
		return
	}
	for _, b := range k.vm.Binaries {
		if strings.HasSuffix(b.Name, guest.UnprivilegedSuffix) {
			continue // without privileges, skipping is the rule
		}
		for _, tc := range b.Report.Cases {
			if tc.Result == "SKIP" && re.MatchString(tc.Name) {
				k.badSkips = append(k.badSkips, b.Name+" "+tc.Name)
			}
		}
	}
}

func main() {
	os.Exit(run(parseFlags()))
}

func run(c config) int {
	start := time.Now()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := &logger{}
	mainf := log.prefixed("kmatrix")

	if err := os.MkdirAll(c.cacheDir, 0o755); err != nil {
		mainf("cache: %v", err)
		return 1
	}
	work, err := os.MkdirTemp("", "kmatrix-")
	if err != nil {
		mainf("%v", err)
		return 1
	}
	if c.keep {
		mainf("work directory: %s", work)
	} else {
		defer os.RemoveAll(work)
	}

	removeStale(filepath.Join(c.cacheDir, "tmp"), 6*time.Hour)
	if !c.offline && (c.mirror == "" || c.securityMirror == "") {
		m, sm, err := hostMirrors("/etc/apt")
		if err != nil {
			mainf("%v", err)
			return 2
		}
		if c.mirror == "" {
			c.mirror = m
		}
		if c.securityMirror == "" {
			c.securityMirror = sm
		}
	}
	tools := &toolbox{install: c.install, logf: mainf}
	repo := &aptRepo{
		dir:            filepath.Join(c.cacheDir, "apt"),
		mirror:         strings.TrimRight(c.mirror, "/"),
		securityMirror: strings.TrimRight(c.securityMirror, "/"),
		refresh:        c.refresh,
		maxAge:         24 * time.Hour,
		logf:           mainf,
	}

	// The host tools, the test binaries and the kernels are prepared
	// concurrently; each VM waits for what it needs.
	var qemuErr error
	qemuReady := make(chan struct{})
	go func() {
		defer close(qemuReady)
		qemuErr = tools.need(ctx, "qemu-system-x86_64")
	}()

	var built *buildResult
	var buildErr error
	buildReady := make(chan struct{})
	go func() {
		defer close(buildReady)
		built, buildErr = build(ctx, buildOptions{
			root:         c.root,
			selfDir:      c.selfDir,
			patterns:     c.pkgs,
			testArgs:     c.testArgs,
			testTimeout:  c.testTimeout,
			workDir:      work,
			notef:        mainf,
			unprivileged: c.unprivileged,
		})
		if buildErr == nil && len(built.binaries) == 0 {
			buildErr = errors.New("no test binary to run")
		}
	}()

	runs := make([]*kernelRun, len(c.kernels))
	sem := make(chan struct{}, c.jobs)
	var wg sync.WaitGroup
	for i, label := range c.kernels {
		kr := &kernelRun{label: label}
		runs[i] = kr
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			defer func() { kr.total = time.Since(t0) }()
			kf := log.prefixed(label)
			kr.entry, kr.err = prepareKernel(ctx, c, repo, tools, label, kf)
			if kr.err != nil {
				kf("%v", kr.err)
				return
			}
			<-buildReady
			<-qemuReady
			switch {
			case buildErr != nil:
				kr.err = fmt.Errorf("not booted: %v", firstLine(buildErr.Error()))
				return
			case qemuErr != nil:
				kr.err = fmt.Errorf("not booted: %v", qemuErr)
				return
			}
			vmBuild := built
			if len(built.moduleNames) > 0 {
				idx, err := ensureModules(ctx, c, repo, tools, kr.entry, built.moduleNames, kf)
				var ird string
				if err == nil {
					ird, err = kernelInitramfs(built, idx, kr.entry.path("modules"), work, label)
				}
				if err != nil {
					kr.err = fmt.Errorf("not booted: %v", err)
					kf("%v", kr.err)
					return
				}
				cp := *built
				cp.initramfs = ird
				vmBuild = &cp
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				kr.err = ctx.Err()
				return
			}
			defer func() { <-sem }()
			kf("booting %s %s (%s)", kr.entry.Pkg.Name(), kr.entry.Pkg.Version, filepath.Base(kr.entry.bootImage(c.bzImage)))
			opts := vmOptions{
				accel:   c.accel,
				mem:     c.mem,
				append:  c.appendArgs,
				timeout: c.timeout,
				bzImage: c.bzImage,
				verbose: c.verbose,
				printf:  kf,
			}
			kr.vm = runVM(ctx, label, kr.entry, vmBuild, opts)
			if kr.vm.Release == "" && ctx.Err() == nil {
				// The kernel died before our init ran (seen under a
				// loaded TCG host: an early "IO-APIC + timer doesn't
				// work" panic). That says nothing about the tests:
				// boot once more, and say so.
				kf("the guest's init never started (%s): booting once more", firstLine(kr.vm.Err))
				kr.vm = runVM(ctx, label, kr.entry, vmBuild, opts)
			}
			kr.checkSkips(c.failOnSkip)
			verdict := "FAIL"
			if kr.passed() {
				verdict = "PASS"
			}
			msg := kr.vm.Err
			if msg == "" && len(kr.badSkips) > 0 {
				msg = "skipped, but -fail-on-skip forbids it: " + strings.Join(kr.badSkips, ", ")
			}
			kf("%s in %s%s", verdict, kr.vm.Duration.Round(100*time.Millisecond), errSuffix(msg))
		}()
	}
	wg.Wait()
	<-buildReady

	if buildErr != nil {
		mainf("build: %v", buildErr)
	}
	if built != nil {
		for _, f := range built.failures {
			mainf("FAIL build %s:\n%s", f.pkg, f.output)
		}
	}
	if !c.verbose {
		for _, kr := range runs {
			printFailures(log, kr)
		}
	}
	ok := printSummary(runs, built, time.Since(start))
	if buildErr != nil || (built != nil && len(built.failures) > 0) {
		ok = false
	}
	if !ok {
		return 1
	}
	return 0
}

// removeStale removes what killed runs left in the cache's tmp directory.
func removeStale(dir string, age time.Duration) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > age {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

func errSuffix(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

// prepareKernel resolves a kernel version, fetches it into the cache if
// needed and extracts its vmlinux.
func prepareKernel(ctx context.Context, c config, repo *aptRepo, tools *toolbox, label string, logf func(string, ...any)) (*kernelEntry, error) {
	var e *kernelEntry
	if c.offline {
		var err error
		if e, err = cachedKernel(c.cacheDir, label); err != nil {
			return nil, err
		}
	} else {
		k, err := repo.resolve(ctx, label)
		if err != nil {
			// Without the archive, a cached kernel still does.
			if ce, cerr := cachedKernel(c.cacheDir, label); cerr == nil {
				logf("%v; using cached %s %s", firstLine(err.Error()), ce.Pkg.Name(), ce.Pkg.Version)
				e = ce
			} else {
				return nil, err
			}
		} else if e, err = fetchKernel(ctx, repo, c.cacheDir, k, logf); err != nil {
			return nil, err
		}
	}
	if !c.bzImage {
		ensureVmlinux(ctx, e, tools, logf)
	}
	return e, ctx.Err()
}

// printFailures shows what failed in one kernel: the failing tests' output,
// or the console if the VM itself failed.
func printFailures(log *logger, kr *kernelRun) {
	p := log.prefixed(kr.label)
	if kr.vm == nil {
		return
	}
	vm := kr.vm
	for _, b := range vm.Binaries {
		if b.passed() {
			continue
		}
		p("--- output of failing %s:", b.Name)
		var lines []string
		for _, tc := range b.Report.Cases {
			if tc.Result == "FAIL" {
				if tc.Unfinished {
					lines = append(lines, "--- NO RESULT: "+tc.Name+" (still running when the binary ended)")
				}
				lines = append(lines, tc.Output...)
			}
		}
		lines = append(lines, b.Report.Other...)
		if len(lines) == 0 {
			lines = b.Output
		}
		if len(lines) > 300 {
			lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-300)}, lines[len(lines)-300:]...)
		}
		for _, l := range lines {
			p("  %s", l)
		}
	}
	if vm.Err != "" {
		p("--- last console lines:")
		for _, l := range vm.Console {
			p("  %s", l)
		}
	}
	if len(vm.Kernel) > 0 {
		p("--- kernel messages worth a look:")
		for _, l := range vm.Kernel {
			p("  %s", l)
		}
	}
}

// printSummary prints the table and the skipped tests and returns whether
// every kernel passed.
func printSummary(runs []*kernelRun, built *buildResult, total time.Duration) bool {
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "KERNEL\tPACKAGE\tVERSION\tRESULT\tTIME\tBOOT\tBINARY\tPASS\tFAIL\tSKIP")
	allOK := true
	passed, failed, skipped := 0, 0, 0
	type skip struct{ kernel, binary, test, reason string }
	var skips []skip
	for _, kr := range runs {
		pkg, ver := "-", "-"
		if kr.entry != nil {
			pkg, ver = kr.entry.Pkg.Name(), kr.entry.Pkg.Version
		}
		result := "PASS"
		if !kr.passed() {
			result = "FAIL"
			allOK = false
		}
		if kr.vm == nil {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t-\t-\t\t\t\n", kr.label, pkg, ver, result, kr.total.Round(100*time.Millisecond))
			failed++ // not booted
			continue
		}
		vm := kr.vm
		boot := "-"
		if vm.Boot > 0 {
			boot = vm.Boot.Round(100 * time.Millisecond).String()
		}
		if len(vm.Binaries) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t-\t\t\t\n", kr.label, pkg, ver, result, vm.Duration.Round(100*time.Millisecond), boot)
		}
		failedBefore := failed
		for i, b := range vm.Binaries {
			p, f, s := b.Report.count("PASS"), b.Report.count("FAIL"), b.Report.count("SKIP")
			passed += p
			failed += f
			skipped += s
			name := b.Name
			if !b.passed() {
				name += " (FAIL"
				if b.Result != nil && b.Result.Reason != "" {
					name += ": " + b.Result.Reason
				} else if b.Result != nil {
					name += fmt.Sprintf(": exit %d", b.Result.ExitCode)
				}
				name += ")"
				if f == 0 {
					failed++ // a binary that failed outside any test
				}
			}
			if i == 0 {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", kr.label, pkg, ver, result, vm.Duration.Round(100*time.Millisecond), boot, name, p, f, s)
			} else {
				fmt.Fprintf(tw, "\t\t\t\t\t\t%s\t%d\t%d\t%d\n", name, p, f, s)
			}
			for _, tc := range b.Report.Cases {
				if tc.Result == "SKIP" {
					skips = append(skips, skip{kr.label, b.Name, tc.Name, tc.skipReason()})
				}
			}
		}
		if !vm.passed() && failed == failedBefore {
			failed++ // the VM failed outside any test
		}
	}
	tw.Flush()
	for _, kr := range runs {
		switch {
		case kr.err != nil:
			fmt.Printf("%s: %v\n", kr.label, firstLine(kr.err.Error()))
		case kr.vm != nil && kr.vm.Err != "":
			fmt.Printf("%s: %s\n", kr.label, kr.vm.Err)
		}
		if len(kr.badSkips) > 0 {
			fmt.Printf("%s: skipped, but -fail-on-skip forbids it: %s\n", kr.label, strings.Join(kr.badSkips, ", "))
			failed += len(kr.badSkips)
		}
	}
	if built != nil {
		for _, f := range built.failures {
			fmt.Printf("build failed: %s\n", f.pkg)
			failed++
		}
	}
	if len(skips) > 0 {
		fmt.Println("\nSkipped tests:")
		tw = tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
		for _, s := range skips {
			reason := s.reason
			if reason == "" {
				reason = "(no reason given)"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", s.kernel, s.binary, s.test, reason)
		}
		tw.Flush()
	}
	fmt.Printf("\nkmatrix: %d kernels in %s\n", len(runs), total.Round(100*time.Millisecond))
	fmt.Printf("kmatrix: %d passed, %d failed, %d skipped\n", passed, failed, skipped)
	return allOK
}
