//go:build linux

// Command guestinit is the init (PID 1) of the kernel matrix's initramfs.
//
// It mounts the pseudo file systems, runs each test binary named in the plan
// (see package guest) with a timeout, prints one marker line per binary and
// one for the whole run on the console, and powers the machine off. It must
// be built with CGO_ENABLED=0. It refuses to run unless it is PID 1.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/cnlink/connector/internal/kmatrix/guest"
	"golang.org/x/sys/unix"
)

// killGrace is how long a binary gets beyond its own timeout. The runner
// passes -test.timeout equal to the timeout, so a hung test normally ends with
// a goroutine dump from the testing package before the init kills it.
const killGrace = 15 * time.Second

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "guestinit: not PID 1; this program is the init of the kernel matrix's VM and powers the machine off")
		os.Exit(2)
	}
	defer func() {
		if r := recover(); r != nil {
			say("%s panic: %v", guest.MarkError, r)
		}
		powerOff()
	}()
	setup()
	run()
}

// say prints one line on the console.
func say(format string, args ...any) {
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

func setup() {
	mounts := []struct{ fstype, target string }{
		{"proc", "/proc"},
		{"sysfs", "/sys"},
		{"devtmpfs", "/dev"},
		{"tmpfs", "/tmp"},
		{"tmpfs", "/run"},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			say("%s mkdir %s: %v", guest.MarkError, m.target, err)
			continue
		}
		err := unix.Mount(m.fstype, m.target, m.fstype, unix.MS_NOSUID, "")
		if err != nil && !errors.Is(err, unix.EBUSY) {
			say("%s mount %s on %s: %v", guest.MarkError, m.fstype, m.target, err)
		}
	}
	// The kernel opened the initramfs's /dev/console node for us; open the
	// devtmpfs one as well so that the descriptors keep working whatever
	// the initramfs held.
	if fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0); err == nil {
		for i := 0; i <= 2; i++ {
			_ = unix.Dup3(fd, i, 0)
		}
		if fd > 2 {
			unix.Close(fd)
		}
	}
	if err := loopbackUp(); err != nil {
		say("kmatrix: loopback: %v", err)
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	uptime := "?"
	if b, err := os.ReadFile("/proc/uptime"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			uptime = f[0]
		}
	}
	say("%s %s uptime=%s", guest.MarkBooted, unix.ByteSliceToString(uts.Release[:]), uptime)
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

func kernelLabel() string {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return ""
	}
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, guest.KernelParam+"="); ok {
			return v
		}
	}
	return ""
}

func run() {
	b, err := os.ReadFile(guest.PlanPath)
	if err != nil {
		say("%s read plan: %v", guest.MarkError, err)
		say("%s fail passed=0 failed=0", guest.MarkDone)
		return
	}
	var plan guest.Plan
	if err := json.Unmarshal(b, &plan); err != nil {
		say("%s parse plan: %v", guest.MarkError, err)
		say("%s fail passed=0 failed=0", guest.MarkDone)
		return
	}
	env := append(plan.Env, "KMATRIX_KERNEL="+kernelLabel())
	passed, failed := 0, 0
	mods := newModules()
	for _, bin := range plan.Binaries {
		say("%s %s", guest.MarkBegin, bin.Name)
		var r guest.Result
		if err := loadModules(mods, bin.Modules); err != nil {
			// The tests would only fail or skip for want of them.
			r = guest.Result{Name: bin.Name, ExitCode: -1, Reason: "modules: " + strings.ReplaceAll(err.Error(), "\n", " ")}
		} else {
			r = runBinary(bin, env)
		}
		// The binary's output may not end with a newline.
		say("\n%s", r)
		if r.Pass {
			passed++
		} else {
			failed++
		}
	}
	verdict := "pass"
	if failed > 0 {
		verdict = "fail"
	}
	say("%s %s passed=%d failed=%d", guest.MarkDone, verdict, passed, failed)
}

func loadModules(mods *modules, loads []guest.ModuleLoad) error {
	for _, l := range loads {
		if err := mods.load(l.Name, l.Params); err != nil {
			return err
		}
	}
	return nil
}

func runBinary(bin guest.Binary, env []string) guest.Result {
	res := guest.Result{Name: bin.Name, ExitCode: -1}
	cmd := exec.Command(bin.Path, bin.Args...)
	cmd.Dir = bin.Dir
	cmd.Env = env
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if bin.UID != 0 {
		// A non-root uid loses every capability at execve.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(bin.UID), Gid: uint32(bin.UID), Groups: []uint32{}}
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		res.Reason = "start: " + strings.ReplaceAll(err.Error(), "\n", " ")
		return res
	}
	pgid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	timeout := bin.Timeout + killGrace
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var err error
	select {
	case err = <-done:
	case <-timer.C:
		_ = unix.Kill(-pgid, unix.SIGKILL)
		err = <-done
		res.Reason = "timeout"
	}
	res.Duration = time.Since(start)
	// Helper processes the binary left behind are ended with it; any that
	// were reparented to us are reaped.
	_ = unix.Kill(-pgid, unix.SIGKILL)
	reapOrphans()
	if res.Reason != "" {
		return res
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		res.ExitCode = 0
		res.Pass = true
	case errors.As(err, &exitErr):
		res.ExitCode = exitErr.ExitCode()
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.Reason = "signal:" + strings.ReplaceAll(ws.Signal().String(), " ", "-")
		}
	default:
		res.Reason = "wait: " + strings.ReplaceAll(err.Error(), "\n", " ")
	}
	return res
}

// reapOrphans collects exited children without blocking; it gives processes
// that were just killed a moment to die first.
func reapOrphans() {
	deadline := time.Now().Add(time.Second)
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		switch {
		case errors.Is(err, unix.ECHILD):
			return // no children at all
		case err != nil && !errors.Is(err, unix.EINTR):
			return
		case pid > 0:
			continue
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func powerOff() {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		say("%s power off: %v", guest.MarkError, err)
	}
	// Returning from PID 1 panics the kernel, and panic=-1 with qemu's
	// -no-reboot ends the VM as well.
	os.Exit(1)
}
