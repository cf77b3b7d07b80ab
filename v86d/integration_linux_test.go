package v86d

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/testutil"
	"golang.org/x/sys/unix"
)

// The integration tests load uvesafb with this package's fake helper and
// check that a framebuffer registers, through both ways the kernel finds
// its helper: a listener already on group 4, and a helper it starts itself.
// They need the uvesafb module file (the kernel matrix provides it; see
// testdata/kmatrix-modules) and qemu's standard VGA; on the host, which has
// neither, they skip.

// helperName is the file name the spawn test gives its copy of the test
// binary; TestMain runs the fake helper when started under that name.
const helperName = "fake-v86d"

func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == helperName {
		os.Exit(fakeHelperMain())
	}
	testutil.Main(m, nil)
}

// fakeHelperMain is the program the kernel starts (argv {path},
// environment HOME=/ and PATH=/sbin:/bin): it daemonizes, and the daemon
// answers tasks with a FakeBIOS until TF_EXIT. It logs to <path>.log.
func fakeHelperMain() int {
	logf, err := os.OpenFile(os.Args[0]+".log", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return 10
	}
	defer logf.Close()
	logln := func(format string, args ...any) { fmt.Fprintf(logf, format+"\n", args...) }
	daemon, ready, err := Daemonize(4 * time.Second)
	if err != nil {
		logln("error %v", err)
		return 11
	}
	if !daemon {
		logln("parent exits")
		return 0
	}
	c, err := connector.Dial(&connector.Config{Groups: []connector.Group{connector.IDV86D.Group()}})
	if err != nil {
		logln("error %v", err)
		return 12
	}
	defer c.Close()
	logln("daemon pid %d", os.Getpid())
	if err := ready(); err != nil {
		logln("error %v", err)
		return 13
	}
	bios := &FakeBIOS{LFB: lfbAddress()}
	h := &Helper{Handle: func(c *Call) (Task, []byte) {
		logln("task %#04x", c.Task.Function())
		return bios.Handle(c)
	}, ErrorLog: func(err error) { logln("error %v", err) }}
	err = h.Serve(context.Background(), c)
	logln("exit %v", err)
	if errors.Is(err, ErrExit) {
		return 0
	}
	return 14
}

// lfbAddress returns BAR 0 of the first VGA-class PCI device (qemu's std
// VGA: 0xfd000000), or 0 for the FakeBIOS default.
func lfbAddress() uint32 {
	devs, _ := filepath.Glob("/sys/bus/pci/devices/*")
	for _, d := range devs {
		class, err := os.ReadFile(d + "/class")
		if err != nil || !strings.HasPrefix(strings.TrimSpace(string(class)), "0x0300") {
			continue
		}
		res, err := os.ReadFile(d + "/resource")
		if err != nil {
			continue
		}
		f := strings.Fields(string(res))
		if len(f) > 0 {
			if v, err := strconv.ParseUint(f[0], 0, 64); err == nil && v != 0 && v <= 0xffffffff {
				return uint32(v)
			}
		}
	}
	return 0
}

// requireUvesafb skips (on the host) or fails (in the matrix) unless
// uvesafb can be loaded here with a framebuffer to drive.
func requireUvesafb(t *testing.T) {
	t.Helper()
	testutil.RequireConnector(t)
	testutil.RequireCapability(t, unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN")
	if !testutil.InMatrix() {
		t.Skip("runs only in the kernel matrix (.ci/matrix -pkgs ./v86d), which provides uvesafb and qemu's standard VGA: loading a framebuffer driver on a real machine would take over its console")
	}
	if lfbAddress() == 0 {
		t.Fatal("in the kernel matrix: no VGA-class PCI device for a linear framebuffer")
	}
	if testutil.ModuleLoaded("uvesafb") {
		t.Fatal("uvesafb is already loaded")
	}
}

// unbindFbcon detaches the framebuffer console, which holds a reference on
// the framebuffer driver's module from the moment it takes the console over
// (fbcon switched to uvesafb's framebuffer in every matrix kernel).
func unbindFbcon() error {
	vcs, _ := filepath.Glob("/sys/class/vtconsole/vtcon*")
	for _, vc := range vcs {
		name, err := os.ReadFile(vc + "/name")
		if err != nil || !strings.Contains(string(name), "frame buffer") {
			continue
		}
		if err := os.WriteFile(vc+"/bind", []byte("0\n"), 0); err != nil {
			return fmt.Errorf("unbinding the framebuffer console %s: %w", vc, err)
		}
	}
	return nil
}

// unloadModule removes a module after unbinding fbcon, retrying briefly
// while it is busy (fbcon releases the framebuffer asynchronously).
func unloadModule(name string) error {
	if err := unbindFbcon(); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := testutil.UnloadModule(name)
		if err == nil || !(errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EBUSY)) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond) // no event announces a module reference drop
	}
}

// uvesafbRegistered reports whether /proc/fb lists uvesafb's framebuffer.
func uvesafbRegistered(t *testing.T) (string, bool) {
	t.Helper()
	b, err := os.ReadFile("/proc/fb")
	if err != nil {
		t.Fatalf("reading /proc/fb: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "VESA VGA") {
			return l, true
		}
	}
	return string(b), false
}

// TestIntegrationListener: with our Helper already on group 4, loading
// uvesafb runs its probe against it (inside finit_module) and registers a
// framebuffer.
func TestIntegrationListener(t *testing.T) {
	requireUvesafb(t)
	c, err := connector.Dial(&connector.Config{Groups: []connector.Group{connector.IDV86D.Group()}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bios := &FakeBIOS{LFB: lfbAddress()}
	h := &Helper{Handle: bios.Handle, ErrorLog: func(err error) { t.Errorf("helper: %v", err) }}
	// The Helper as a handler on a Mux, with the tasks' bytes kept as fuzz
	// seeds (testdata/kernel-tasks.txt), one per function.
	seeds := map[uint16]bool{}
	mx := connector.NewMux()
	mx.HandleFunc(connector.IDV86D, func(req connector.Request) {
		if tk, _, err := ParseTask(req.Msg.Data); err == nil && req.From.Kernel() && !seeds[tk.Function()] {
			seeds[tk.Function()] = true
			t.Logf("seed %s %#04x %x", os.Getenv("KMATRIX_KERNEL"), tk.Function(), req.Msg.Data)
		}
		h.ServeConnector(req)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mx.Serve(ctx, c, nil) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Serve: %v", err)
		}
	}()

	start := time.Now()
	if err := testutil.LoadModule("uvesafb", "v86d=/nonexistent mtrr=0"); err != nil {
		t.Fatal(err)
	}
	t.Logf("uvesafb loaded in %v", time.Since(start))
	line, ok := uvesafbRegistered(t)
	if !ok {
		t.Errorf("no uvesafb framebuffer in /proc/fb: %q; calls: %v", line, functions(bios.Calls()))
	} else {
		checkFramebuffer(t, line, lfbAddress())
	}
	calls := bios.Calls()
	if len(calls) == 0 || calls[0].Function() != FuncGetInfo || calls[0].Flags != FlagVBEIB {
		t.Fatalf("first call %v, want 0x4f00 with TF_VBEIB", functions(calls))
	}
	n := 0
	for _, c := range calls {
		if c.Function() == FuncGetModeInfo {
			n++
		}
	}
	if n != len(DefaultFakeModes) {
		t.Errorf("%d mode queries, want one per mode (%d): %v", n, len(DefaultFakeModes), functions(calls))
	}
	if err := unloadModule("uvesafb"); err != nil {
		t.Fatal(err)
	}
	if _, ok := uvesafbRegistered(t); ok {
		t.Error("the framebuffer outlived the module")
	}
	t.Logf("line %q; calls %v; mode set %#x", line, functions(calls), bios.Mode())
}

// checkFramebuffer opens /dev/fbN for the /proc/fb line ("N VESA VGA") and
// checks with FBIOGET_FSCREENINFO that it maps the LFB the fake reported.
func checkFramebuffer(t *testing.T, line string, lfb uint32) {
	t.Helper()
	n, _, _ := strings.Cut(strings.TrimSpace(line), " ")
	f, err := os.Open("/dev/fb" + n)
	if err != nil {
		t.Errorf("the framebuffer device: %v", err)
		return
	}
	defer f.Close()
	// struct fb_fix_screeninfo: char id[16], unsigned long smem_start,
	// __u32 smem_len, ... (68 bytes on 32-bit, 80 on 64-bit).
	var fix [80]byte
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), 0x4602, uintptr(unsafe.Pointer(&fix[0]))); e != 0 {
		t.Errorf("FBIOGET_FSCREENINFO: %v", e)
		return
	}
	id := strings.TrimRight(string(fix[:16]), "\x00")
	start := uint64(binary.NativeEndian.Uint32(fix[16:]))
	if unsafe.Sizeof(uintptr(0)) == 8 {
		start = binary.NativeEndian.Uint64(fix[16:])
	}
	if id != "VESA VGA" || start != uint64(lfb) {
		t.Errorf("/dev/fb%s: id %q, smem_start %#x; want \"VESA VGA\" at the LFB %#x", n, id, start, lfb)
	}
}

func functions(ts []Task) []string {
	var s []string
	for _, t := range ts {
		s = append(s, fmt.Sprintf("%#04x", t.Function()))
	}
	return s
}

// TestIntegrationSpawn: with nobody on group 4, uvesafb starts the helper
// named by its v86d parameter (a copy of this test binary), which
// daemonizes; the framebuffer registers, and unloading the module sends
// TF_EXIT, on which the daemon exits.
func TestIntegrationSpawn(t *testing.T) {
	requireUvesafb(t)
	dir, err := os.MkdirTemp("", "v86d")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, helperName)
	if err := copyFile(exe, path); err != nil {
		t.Fatal(err)
	}
	if err := testutil.LoadModule("uvesafb", "v86d="+path+" mtrr=0"); err != nil {
		t.Fatal(err)
	}
	log := func() string { b, _ := os.ReadFile(path + ".log"); return string(b) }
	line, ok := uvesafbRegistered(t)
	if !ok {
		t.Errorf("no uvesafb framebuffer in /proc/fb: %q; helper log:\n%s", line, log())
	} else {
		checkFramebuffer(t, line, lfbAddress())
	}
	pid := 0
	for _, l := range strings.Split(log(), "\n") {
		if v, ok := strings.CutPrefix(l, "daemon pid "); ok {
			pid, _ = strconv.Atoi(v)
		}
	}
	if pid == 0 || !strings.Contains(log(), "parent exits") || !strings.Contains(log(), "task 0x4f00") {
		t.Fatalf("the kernel did not start the helper, or it did not daemonize:\n%s", log())
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	defer unix.Close(pidfd)
	if err := unloadModule("uvesafb"); err != nil {
		_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
		t.Fatal(err)
	}
	// The daemon exits on TF_EXIT: wait for the pidfd to become readable.
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 5000); n != 1 || err != nil {
		_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
		t.Fatalf("the helper daemon did not exit within 5 s of the unload (%v); log:\n%s", err, log())
	}
	if !strings.Contains(log(), "exit "+ErrExit.Error()) {
		t.Errorf("the daemon exited without TF_EXIT:\n%s", log())
	}
	t.Logf("helper log:\n%s", log())
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, bufio.NewReader(in)); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestIntegrationNoAgent: on the running kernel, Serve fails at once with
// connector.ErrNoAgent, naming the module, where uvesafb is not registered
// (the host), and Check passes where it is.
func TestIntegrationNoAgent(t *testing.T) {
	h := &Helper{SkipPrivilegeCheck: true}
	testutil.CheckAgentGate(t, connector.IDV86D, "uvesafb", h.Check, h.Serve)
}

// TestPrivilegeCheck: Serve refuses to run without CAP_SYS_ADMIN, whose
// absence uvesafb would answer only with silence, with an error matching
// ErrNoSysAdmin and os.ErrPermission; with it, it gets past the check.
func TestPrivilegeCheck(t *testing.T) {
	has, err := testutil.HasCapability(unix.CAP_SYS_ADMIN)
	if err != nil {
		t.Fatal(err)
	}
	k := newFakeUvesafb(t).k
	c, err := k.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = (&Helper{}).Serve(ctx, c)
	if has {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("with CAP_SYS_ADMIN: %v, want context.Canceled", err)
		}
		return
	}
	if !errors.Is(err, ErrNoSysAdmin) || !errors.Is(err, os.ErrPermission) || !strings.HasPrefix(err.Error(), "v86d: serve: the process lacks CAP_SYS_ADMIN") {
		t.Errorf("without CAP_SYS_ADMIN: %v, want ErrNoSysAdmin and os.ErrPermission, reading v86d: serve: the process lacks CAP_SYS_ADMIN", err)
	}
	testutil.CheckErrorShape(t, "Serve without CAP_SYS_ADMIN", err, "v86d")
	err = (&Helper{}).Check(c)
	testutil.CheckErrorShape(t, "Check without CAP_SYS_ADMIN", err, "v86d")
	if !strings.HasPrefix(fmt.Sprint(err), "v86d: check: ") {
		t.Errorf("Check without CAP_SYS_ADMIN: %v, want v86d: check: ...", err)
	}
}
