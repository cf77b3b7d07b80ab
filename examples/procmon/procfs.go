//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// procFS reads /proc/<pid> files with as few system calls and allocations
// as possible: openat, one or two reads into a reused buffer, close. It is
// not safe for concurrent use.
type procFS struct {
	root     string // "/proc", or a fake tree in tests
	dir      int    // root opened (O_PATH): paths are looked up from it; -1 if not
	path     []byte
	buf      []byte
	noCgroup bool // -cgroup=false: do not read cgroups at exec
	tty      bool // -tty: read the controlling terminal at exec
	// cgroups maps the bytes of /proc/<pid>/cgroup files read to what
	// procmon takes from them, so that the many processes in one cgroup
	// share one parse and its strings.
	cgroups map[string]cgroupInfo
}

type cgroupInfo struct{ path, container string }

// maxCgroups bounds the cgroups cache; it starts over when full.
const maxCgroups = 4096

// maxCmdline bounds how much of a command line is read. Longer ones are cut
// and flagged.
const maxCmdline = 4096

func newProcFS(root string) *procFS {
	fs := &procFS{root: root, dir: -1, buf: make([]byte, maxCmdline+1), cgroups: make(map[string]cgroupInfo)}
	// Files are opened relative to the root, which spares the kernel
	// looking up its path at every open.
	if fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
		fs.dir = fd
	}
	return fs
}

// Close closes the root's descriptor. The procFS reads by whole paths
// afterwards. Calling it again does nothing.
func (fs *procFS) Close() {
	if fs.dir >= 0 {
		unix.Close(fs.dir)
		fs.dir = -1
	}
}

// errGone means the process had exited (or was a zombie) when its /proc
// entry was read.
var errGone = errors.New("process already gone")

// read returns the start of /proc/<pid>/<name>, up to len(buf) bytes. The
// result aliases the buffer until the next call.
func (fs *procFS) read(pid int32, name string) ([]byte, error) {
	p := fs.start()
	p = strconv.AppendInt(p, int64(pid), 10)
	p = append(p, '/')
	p = append(p, name...)
	return fs.readPath(p, true)
}

// start begins a path under the root: relative to fs.dir, or the whole
// path when the root could not be opened.
func (fs *procFS) start() []byte {
	if fs.dir >= 0 {
		return fs.path[:0]
	}
	return append(append(fs.path[:0], fs.root...), '/')
}

// readPath reads the file at p (without its NUL; see start) into the
// buffer; see read. With short, a read that returns less than asked for
// ends the file.
func (fs *procFS) readPath(p []byte, short bool) ([]byte, error) {
	p = append(p, 0)
	fs.path = p
	dir := atFDCWD
	if fs.dir >= 0 {
		dir = uintptr(fs.dir)
	}
	// Raw system calls: these files are generated in memory, so the calls
	// do not block for long, and the Go scheduler's bookkeeping around an
	// ordinary system call (entersyscall, exitsyscall) would cost a
	// tenth of the read itself, three times per file and per exec.
	fd, _, e := unix.RawSyscall6(unix.SYS_OPENAT, dir, uintptr(unsafe.Pointer(&p[0])),
		uintptr(unix.O_RDONLY|unix.O_CLOEXEC), 0, 0, 0)
	if e != 0 {
		if e == unix.ENOENT || e == unix.ESRCH {
			return nil, errGone
		}
		return nil, &os.PathError{Op: "open", Path: fs.fullPath(p), Err: e}
	}
	defer unix.RawSyscall(unix.SYS_CLOSE, fd, 0, 0)
	n := 0
	for n < len(fs.buf) {
		m, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&fs.buf[n])), uintptr(len(fs.buf)-n))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			if e == unix.ESRCH {
				return nil, errGone
			}
			return nil, &os.PathError{Op: "read", Path: fs.fullPath(p), Err: e}
		}
		if m == 0 {
			break
		}
		n += int(m)
		if short {
			// These files are generated whole by one read of a
			// larger buffer: a short read is the end, and the read
			// that would return 0 is saved.
			break
		}
	}
	return fs.buf[:n], nil
}

// fullPath is the path of p (NUL-terminated, as readPath has it) for
// error messages.
func (fs *procFS) fullPath(p []byte) string {
	p = p[:len(p)-1]
	if fs.dir >= 0 {
		return fs.root + "/" + string(p)
	}
	return string(p)
}

// pids lists the process ids in /proc.
func (fs *procFS) pids() (map[int32]bool, error) {
	d, err := os.Open(fs.root)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	m := make(map[int32]bool, len(names))
	for _, n := range names {
		if pid, err := strconv.ParseInt(n, 10, 32); err == nil {
			m[int32(pid)] = true
		}
	}
	return m, nil
}

// procInfo is what procmon knows about a process (thread group). A forked
// child starts as a copy of its parent's; the cmdline slice is then shared,
// so it is replaced, never modified in place.
type procInfo struct {
	tgid, ppid int32
	// start is the CLOCK_MONOTONIC time the process started; startFrom
	// says how it is known.
	start     uint64
	startFrom string // "fork", "exec" or "proc"
	execAt    uint64

	comm string
	// cmdline is argv; cmdTrunc reports that it was cut at maxCmdline.
	cmdline  []string
	cmdTrunc bool
	// state of the /proc enrichment.
	enriched bool // status, cmdline and cgroup were read (or found gone)
	gone     bool // the process had exited before they could be read

	ruid, euid uint32
	uidKnown   bool
	cgroup     string
	container  string
	// tty is the controlling terminal (tty_nr of /proc/<pid>/stat, 0 for
	// none), read with -tty.
	tty      uint32
	ttyKnown bool

	// parentStart is the start time of the parent when ppid was learned:
	// a parent in the table with another start time is a later process
	// with a reused pid, and ppid is then stale.
	parentStart uint64
	// nthreads counts the live threads other than the main thread that
	// procmon knows of; leaderExited is set when the main thread exited
	// while they lived on.
	nthreads     int
	leaderExited bool
}

// enrich reads comm, uids and parent from status, the command line and the
// cgroup. It marks the process gone when /proc no longer has it.
func (fs *procFS) enrich(p *procInfo) {
	p.enriched = true
	b, err := fs.read(p.tgid, "status")
	if err == nil && len(b) == 0 {
		err = errGone
	}
	if err != nil {
		p.gone = true
		return
	}
	parseStatus(b, p)
	fs.enrichRest(p)
}

// enrichRest reads the command line, the cgroup and, with -tty, the
// terminal.
func (fs *procFS) enrichRest(p *procInfo) {
	p.enriched = true
	b, err := fs.read(p.tgid, "cmdline")
	if err != nil || len(b) == 0 {
		// An empty command line is a zombie (or a kernel thread, which
		// never execs): either way there is nothing true to show.
		p.gone = p.gone || err != nil || !isKernelThread(p)
		p.cmdline = nil
	} else {
		p.cmdline, p.cmdTrunc = parseCmdline(b, len(b) >= maxCmdline+1)
	}
	if !fs.noCgroup {
		fs.readCgroup(p)
	}
	if fs.tty {
		fs.readTTY(p)
	}
}

// execRead is what /proc says about a process at its exec (see readExec).
type execRead struct {
	cmdline  []string
	cmdTrunc bool
	// gone: the command line could not be read because the process had
	// exited (or was a zombie).
	gone              bool
	comm              string
	cgroup, container string
	cgroupRead        bool
	tty               uint32
	ttyKnown          bool
}

// readExec reads what an exec changes: the command line, the cgroup
// (container managers move a child into its cgroup before it execs), the
// name when wantComm and, with -tty, the terminal. It runs for every exec on
// the machine, so it reads as little as it can: the parent and the uids
// carry over from the fork and from uid events (the kernel sends one before
// the exec of a set-user-ID program), which spares the status file.
//
// Each field falls back on its own: a process that is already a zombie has
// no command line (its memory is gone) but still has its name, and one that
// is gone from /proc has neither.
func (fs *procFS) readExec(pid int32, wantComm bool, x *execRead) {
	*x = execRead{}
	b, err := fs.read(pid, "cmdline")
	if err == nil && len(b) > 0 {
		x.cmdline, x.cmdTrunc = parseCmdline(b, len(b) >= maxCmdline+1)
	} else {
		x.gone = true
	}
	if wantComm || x.gone {
		if b, err := fs.read(pid, "comm"); err == nil && len(b) > 0 {
			x.comm = string(bytes.TrimSuffix(b, []byte{'\n'}))
		}
	}
	if x.gone && x.comm == "" {
		// The status file has the name too, as a last resort.
		if b, err := fs.read(pid, "status"); err == nil && len(b) > 0 {
			var p procInfo
			parseStatus(b, &p)
			x.comm = p.comm
		}
	}
	if x.gone && x.comm == "" {
		return // nothing left in /proc
	}
	if !fs.noCgroup {
		if b, err := fs.read(pid, "cgroup"); err == nil {
			c := fs.cgroupOf(b)
			x.cgroup, x.container, x.cgroupRead = c.path, c.container, true
		}
	}
	if fs.tty {
		if b, err := fs.read(pid, "stat"); err == nil {
			x.tty, x.ttyKnown = parseStatTTY(b)
		}
	}
}

// enrichExec reads what an exec changes (readExec) into p.
func (fs *procFS) enrichExec(p *procInfo, wantComm bool) {
	var x execRead
	fs.readExec(p.tgid, wantComm || !p.uidKnown, &x)
	fs.applyExec(p, &x)
}

// applyExec sets p from what was read at its exec. When the uids are not
// known (no parent to inherit them from), it reads them from the status
// file now.
func (fs *procFS) applyExec(p *procInfo, x *execRead) {
	p.enriched, p.gone, p.cmdline, p.cmdTrunc, p.comm = true, x.gone, x.cmdline, x.cmdTrunc, x.comm
	if !p.uidKnown {
		if b, err := fs.read(p.tgid, "status"); err == nil && len(b) > 0 {
			comm := p.comm
			parseStatus(b, p)
			if comm != "" {
				p.comm = comm
			}
		}
	}
	if p.gone && p.comm == "" {
		return // nothing was left in /proc
	}
	switch {
	case fs.noCgroup:
		p.cgroup, p.container = "", ""
	case x.cgroupRead:
		p.cgroup, p.container = x.cgroup, x.container
	}
	if x.ttyKnown {
		p.tty, p.ttyKnown = x.tty, true
	}
}

// parent reads the parent process id of pid from /proc.
func (fs *procFS) parent(pid int32) (int32, bool) {
	b, err := fs.read(pid, "status")
	if err != nil || len(b) == 0 {
		return 0, false
	}
	var p procInfo
	p.ppid = -1
	parseStatus(b, &p)
	return p.ppid, p.ppid >= 0
}

// threadComm reads the name of thread tid of process tgid.
func (fs *procFS) threadComm(tgid, tid int32) (string, bool) {
	p := fs.start()
	p = strconv.AppendInt(p, int64(tgid), 10)
	p = append(p, "/task/"...)
	p = strconv.AppendInt(p, int64(tid), 10)
	p = append(p, "/comm"...)
	b, err := fs.readPath(p, true)
	if err != nil || len(b) == 0 {
		return "", false
	}
	return string(bytes.TrimSuffix(b, []byte{'\n'})), true
}

// tasks lists the thread ids of process tgid.
func (fs *procFS) tasks(tgid int32) []int32 {
	d, err := os.Open(fs.root + "/" + strconv.Itoa(int(tgid)) + "/task")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	var tids []int32
	for _, n := range names {
		if tid, err := strconv.ParseInt(n, 10, 32); err == nil && tid > 0 {
			tids = append(tids, int32(tid))
		}
	}
	return tids
}

// readTTY sets p's controlling terminal from /proc/<pid>/stat.
func (fs *procFS) readTTY(p *procInfo) {
	if b, err := fs.read(p.tgid, "stat"); err == nil {
		if tty, ok := parseStatTTY(b); ok {
			p.tty, p.ttyKnown = tty, true
		}
	}
}

// parseStatTTY returns tty_nr, the 7th field of /proc/<pid>/stat
// (fs/proc/array.c, do_task_stat): "pid (comm) state ppid pgrp session
// tty_nr ...". The name may hold spaces and parentheses, so the fields are
// counted from the last ')'.
func parseStatTTY(b []byte) (uint32, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(b[i+1:])
	// state ppid pgrp session tty_nr
	if len(f) < 5 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(f[4]), 10, 64)
	if err != nil {
		return 0, false
	}
	return uint32(n), true
}

// ttyName names a tty_nr as ps(1) does: pts/N, ttyN, ttySN, or
// major:minor for others; "?" for none. The device number is the kernel's
// old encoding (include/linux/kdev_t.h, new_encode_dev): minor bits 0-7 and
// 20-31, major bits 8-19.
func ttyName(nr uint32) string {
	if nr == 0 {
		return "?"
	}
	major := (nr >> 8) & 0xfff
	minor := (nr & 0xff) | ((nr >> 12) & 0xfff00)
	switch {
	case major >= 136 && major <= 143: // Unix98 pseudo-terminals
		return "pts/" + strconv.Itoa(int((major-136)<<8|minor))
	case major == 4 && minor < 64:
		return "tty" + strconv.Itoa(int(minor))
	case major == 4:
		return "ttyS" + strconv.Itoa(int(minor-64))
	case major == 5 && minor == 1:
		return "console"
	}
	return strconv.Itoa(int(major)) + ":" + strconv.Itoa(int(minor))
}

// readCgroup sets p's cgroup path and container from /proc/<pid>/cgroup.
func (fs *procFS) readCgroup(p *procInfo) {
	if b, err := fs.read(p.tgid, "cgroup"); err == nil {
		c := fs.cgroupOf(b)
		p.cgroup, p.container = c.path, c.container
	}
}

// cgroupOf returns the cgroup path and container of a /proc/<pid>/cgroup
// file's bytes, parsed once for each distinct file.
func (fs *procFS) cgroupOf(b []byte) cgroupInfo {
	if c, ok := fs.cgroups[string(b)]; ok {
		return c
	}
	c := cgroupInfo{parseCgroup(b), containerOf(b)}
	if len(fs.cgroups) >= maxCgroups {
		clear(fs.cgroups)
	}
	fs.cgroups[string(b)] = c
	return c
}

// isKernelThread reports whether p looks like a kernel thread: a child of
// kthreadd (pid 2) or kthreadd itself.
func isKernelThread(p *procInfo) bool { return p.ppid == 2 || p.tgid == 2 }

// parseStatus takes Name, PPid and Uid from /proc/<pid>/status.
func parseStatus(b []byte, p *procInfo) {
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		key, val, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		val = bytes.TrimSpace(val)
		switch string(key) {
		case "Name":
			p.comm = unescapeStatusName(val)
		case "PPid":
			if n, err := strconv.ParseInt(string(val), 10, 32); err == nil {
				p.ppid = int32(n)
			}
		case "Uid":
			f := bytes.Fields(val)
			if len(f) >= 2 {
				r, err1 := strconv.ParseUint(string(f[0]), 10, 32)
				e, err2 := strconv.ParseUint(string(f[1]), 10, 32)
				if err1 == nil && err2 == nil {
					p.ruid, p.euid, p.uidKnown = uint32(r), uint32(e), true
				}
			}
			return // Name, PPid and Uid come in this order
		}
	}
}

// unescapeStatusName undoes the escaping of the Name line in
// /proc/<pid>/status (fs/proc/array.c, proc_task_name): "\n" and "\\" are
// written as two characters.
func unescapeStatusName(b []byte) string {
	if bytes.IndexByte(b, '\\') < 0 {
		return string(b)
	}
	var s strings.Builder
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+1 < len(b) {
			switch b[i+1] {
			case 'n':
				s.WriteByte('\n')
				i++
				continue
			case '\\':
				s.WriteByte('\\')
				i++
				continue
			}
		}
		s.WriteByte(b[i])
	}
	return s.String()
}

// parseCmdline splits /proc/<pid>/cmdline at NUL bytes. A trailing NUL ends
// the last argument; a process may also have rewritten its argument area
// (setproctitle), which then reads as one string with spaces.
func parseCmdline(b []byte, truncated bool) ([]string, bool) {
	if truncated {
		b = b[:maxCmdline]
	}
	b = bytes.TrimSuffix(b, []byte{0})
	n := bytes.Count(b, []byte{0}) + 1
	args := make([]string, 0, n)
	s := string(b) // one allocation for all arguments
	for {
		i := strings.IndexByte(s, 0)
		if i < 0 {
			args = append(args, s)
			break
		}
		args = append(args, s[:i])
		s = s[i+1:]
	}
	return args, truncated
}

// parseCgroup returns the process's cgroup path from /proc/<pid>/cgroup: the
// unified (v2) hierarchy's path when it is not the root, otherwise the
// first non-root path of a v1 hierarchy, prefixed with its controllers
// ("memory:/docker/..."), otherwise "/".
func parseCgroup(b []byte) string {
	var v1 []byte
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		// hierarchy-ID:controller-list:cgroup-path
		id, rest, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		ctrl, path, ok := bytes.Cut(rest, []byte{':'})
		if !ok {
			continue
		}
		root := len(path) == 1 && path[0] == '/'
		if len(id) == 1 && id[0] == '0' && len(ctrl) == 0 {
			if !root && len(path) > 0 {
				return string(path)
			}
			continue
		}
		if v1 == nil && !root && len(path) > 0 {
			v1 = rest
		}
	}
	if v1 != nil {
		return string(v1)
	}
	return "/"
}

// containerOf recognises the cgroup paths that container managers create and
// returns "manager:id" (a hexadecimal id cut to 12 characters), or "".
func containerOf(b []byte) string {
	for _, c := range containerPatterns {
		i := bytes.Index(b, []byte(c.prefix))
		if i < 0 {
			continue
		}
		id := b[i+len(c.prefix):]
		if j := bytes.IndexAny(id, c.end); j >= 0 {
			id = id[:j]
		}
		if len(id) == 0 {
			continue
		}
		if c.hex && len(id) > 12 {
			id = id[:12]
		}
		return c.name + ":" + string(id)
	}
	return ""
}

var containerPatterns = []struct {
	prefix, end, name string
	hex               bool
}{
	{"/docker-", ".\n/", "docker", true},             // systemd driver: docker-<id>.scope
	{"/docker/", "\n/", "docker", true},              // cgroupfs driver: /docker/<id>
	{"/cri-containerd-", ".\n/", "containerd", true}, // containerd with systemd
	{"/crio-", ".\n/", "cri-o", true},
	{"/libpod-", ".\n/", "podman", true},
	{"/lxc.payload.", "\n/", "lxc", false}, // LXC 4+: /lxc.payload.<name>
	{"/lxc/", "\n/", "lxc", false},
	{"/machine-", ".\n/", "machine", false}, // systemd-nspawn and VMs: machine-<name>.scope
	{"/kubepods/", "\n", "kubepods", false},
}

// users maps uids to names from /etc/passwd, read once and again when the
// file changes (checked at most every few seconds, on a miss).
type users struct {
	path    string
	names   map[uint32]string
	mtime   time.Time
	checked time.Time
}

// newUsers reads the file at path. It returns the error of a file that
// cannot be read, with users that know no names and read the file again
// (at most every few seconds) on a miss, should it appear.
func newUsers(path string) (*users, error) {
	u := &users{path: path}
	return u, u.load()
}

func (u *users) load() error {
	u.checked = time.Now()
	if u.names == nil {
		u.names = map[uint32]string{}
	}
	fi, err := os.Stat(u.path)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory, not a passwd file", u.path)
	}
	if !u.mtime.IsZero() && fi.ModTime().Equal(u.mtime) {
		return nil
	}
	b, err := os.ReadFile(u.path)
	if err != nil {
		return err
	}
	u.mtime = fi.ModTime()
	u.names = parsePasswd(b)
	return nil
}

// name returns the user name of uid, or "" when /etc/passwd has none.
func (u *users) name(uid uint32) string {
	if n, ok := u.names[uid]; ok {
		return n
	}
	if time.Since(u.checked) > 5*time.Second {
		_ = u.load()
		if n, ok := u.names[uid]; ok {
			return n
		}
	}
	return ""
}

// parsePasswd maps uids to names: "name:password:uid:gid:gecos:home:shell".
// The first entry for a uid wins, as with getpwuid.
func parsePasswd(b []byte) map[uint32]string {
	m := map[uint32]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.SplitN(line, ":", 4)
		if len(f) < 4 || f[0] == "" {
			continue
		}
		uid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			continue
		}
		if _, dup := m[uint32(uid)]; !dup {
			m[uint32(uid)] = f[0]
		}
	}
	return m
}

// atFDCWD is AT_FDCWD (-100) as a system call argument.
var atFDCWD = func() uintptr { fd := unix.AT_FDCWD; return uintptr(fd) }()
