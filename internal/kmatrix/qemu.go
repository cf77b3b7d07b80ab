package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"github.com/cnlink/connector/internal/kmatrix/guest"
)

type vmOptions struct {
	accel   string
	mem     string
	append  string // extra kernel command-line arguments
	timeout time.Duration
	bzImage bool // boot the bzImage even if there is a vmlinux
	verbose bool
	printf  func(format string, args ...any) // prints one line, prefixed
}

// binaryRun is one test binary's outcome in one VM.
type binaryRun struct {
	Name   string
	Result *guest.Result // nil if the guest never reported one
	Output []string
	Report *testReport
}

func (b *binaryRun) passed() bool { return b.Result != nil && b.Result.Pass }

// vmRun is the outcome of one boot.
type vmRun struct {
	Image    string        // what was passed to -kernel
	Release  string        // uname -r in the guest
	Boot     time.Duration // guest uptime when the init started
	Duration time.Duration // qemu's wall time
	Binaries []*binaryRun
	Done     bool   // the init reported the end of the plan
	Err      string // why the VM as a whole failed, if it did
	Kernel   []string
	// Console holds the last lines that belong to no binary.
	Console []string
}

// kernelTrouble matches kernel messages (printk lines carry a timestamp)
// worth showing even when the tests passed.
var kernelTrouble = regexp.MustCompile(`\[\s*[0-9]+\.[0-9]+\] .*(Oops|BUG:|WARNING:|Kernel panic|general protection fault|Call Trace:|segfault at)`)

const consoleTail = 80

// ansiEscape matches terminal escape sequences (SeaBIOS clears the screen).
var ansiEscape = regexp.MustCompile(`\x1b(\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_]|c)`)

// runVM boots one kernel with the initramfs and collects what the init
// reports.
func runVM(ctx context.Context, label string, e *kernelEntry, b *buildResult, o vmOptions) *vmRun {
	res := &vmRun{Image: e.bootImage(o.bzImage)}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	// no_timer_check: under TCG on a busy host the early IO-APIC timer
	// check can fail and panic the boot; the check has no bearing on tests.
	cmdline := "console=ttyS0 panic=-1 quiet no_timer_check " + guest.KernelParam + "=" + label
	if o.append != "" {
		cmdline += " " + o.append
	}
	args := []string{
		"-accel", o.accel,
		"-smp", "1",
		"-m", o.mem,
		"-nographic",
		"-monitor", "none",
		"-no-reboot",
		"-nic", "none",
		"-kernel", res.Image,
		"-initrd", b.initramfs,
		"-append", cmdline,
	}
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		res.Err = err.Error()
		return res
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		res.Err = "starting qemu: " + err.Error()
		return res
	}
	var cur *binaryRun
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := ansiEscape.ReplaceAllString(strings.ReplaceAll(sc.Text(), "\r", ""), "")
		if o.verbose {
			o.printf("%s", line)
		}
		switch {
		case strings.Contains(line, guest.MarkBooted):
			rest, _ := guest.After(line, guest.MarkBooted)
			f := strings.Fields(rest)
			if len(f) > 0 {
				res.Release = f[0]
			}
			if len(f) > 1 {
				if d, err := time.ParseDuration(strings.TrimPrefix(f[1], "uptime=") + "s"); err == nil {
					res.Boot = d
				}
			}
			if !o.verbose {
				o.printf("booted %s in %s (guest uptime %s)", res.Release, time.Since(start).Round(100*time.Millisecond), res.Boot.Round(10*time.Millisecond))
			}
		case strings.Contains(line, guest.MarkBegin):
			name, _ := guest.After(line, guest.MarkBegin)
			cur = &binaryRun{Name: name}
			res.Binaries = append(res.Binaries, cur)
		case strings.Contains(line, guest.MarkResult):
			r, ok := guest.ParseResult(line)
			if !ok {
				break
			}
			if cur == nil || cur.Name != r.Name {
				cur = &binaryRun{Name: r.Name}
				res.Binaries = append(res.Binaries, cur)
			}
			cur.Result = &r
			if !o.verbose {
				o.printf("%s", r.String())
			}
			cur = nil
		case strings.Contains(line, guest.MarkDone):
			res.Done = true
		case strings.Contains(line, guest.MarkError):
			msg, _ := guest.After(line, guest.MarkError)
			res.Console = append(res.Console, line)
			if res.Err == "" {
				res.Err = "guest init: " + msg
			}
		default:
			if kernelTrouble.MatchString(line) {
				res.Kernel = append(res.Kernel, line)
			}
			if cur != nil {
				cur.Output = append(cur.Output, line)
			} else {
				res.Console = append(res.Console, line)
				if len(res.Console) > consoleTail {
					res.Console = res.Console[len(res.Console)-consoleTail:]
				}
			}
		}
	}
	waitErr := cmd.Wait()
	res.Duration = time.Since(start)
	for _, br := range res.Binaries {
		for len(br.Output) > 0 && strings.TrimSpace(br.Output[len(br.Output)-1]) == "" {
			br.Output = br.Output[:len(br.Output)-1]
		}
		br.Report = parseTestOutput(br.Output)
	}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		res.Err = fmt.Sprintf("timed out after %s; qemu killed", o.timeout)
	case ctx.Err() != nil:
		res.Err = "interrupted"
	case waitErr != nil && !res.Done:
		res.Err = fmt.Sprintf("qemu: %v %s", waitErr, strings.TrimSpace(stderr.String()))
	case !res.Done && res.Err == "":
		res.Err = "the VM stopped before the init finished"
		if s := strings.TrimSpace(stderr.String()); s != "" {
			res.Err += ": " + s
		}
	}
	if res.Err == "" && len(res.Binaries) != len(b.binaries) {
		res.Err = fmt.Sprintf("the init reported %d binaries, %d were planned", len(res.Binaries), len(b.binaries))
	}
	return res
}

// passed reports whether the VM ran every binary and each passed.
func (r *vmRun) passed() bool {
	if r.Err != "" || !r.Done {
		return false
	}
	for _, b := range r.Binaries {
		if !b.passed() {
			return false
		}
	}
	return true
}
