//go:build linux

package proc

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// userHZ is USER_HZ, the unit of the times in /proc/<pid>/stat: 100 on every
// Linux architecture's user-space ABI.
const userHZ = 100

// Snapshot lists the live processes from /proc, for a consumer to rebuild
// its state when it starts listening or after events were lost (a KindLost
// event). Subscribe first and snapshot second: a process that starts or
// exits in between then shows up in both, instead of in neither.
//
// An error about one process never fails the listing. A process that exits
// while the listing runs is left out. A process whose files cannot be read
// or parsed (with /proc mounted hidepid=1, other users' processes are
// listed but unreadable; hidepid=2 hides them altogether) is listed with
// only PID, TGID and Err set. Snapshot fails only when /proc itself cannot
// be listed.
//
// The listing covers the PID namespace of the mounted /proc, while events
// carry ids of the initial PID namespace; the two agree when the caller runs
// in the initial namespace, as listening requires.
func Snapshot() ([]Process, error) { return snapshot("/proc", os.ReadFile) }

func snapshot(root string, readFile func(string) ([]byte, error)) ([]Process, error) {
	d, err := os.Open(root)
	if err != nil {
		return nil, fmt.Errorf("proc: snapshot: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("proc: snapshot: %w", err)
	}
	ps := make([]Process, 0, len(names))
	for _, name := range names {
		pid, err := strconv.ParseInt(name, 10, 32)
		if err != nil || pid <= 0 {
			continue
		}
		dir := filepath.Join(root, name)
		p, err := readProcess(dir, readFile)
		if err == nil && p.PID != int32(pid) {
			err = fmt.Errorf("%s/stat names pid %d", dir, p.PID)
		}
		if err != nil {
			if gone(err) {
				continue
			}
			p = Process{PID: int32(pid), TGID: int32(pid), Err: fmt.Errorf("proc: snapshot: process %d: %w", pid, err)}
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// gone reports whether err means the process exited while it was read:
// its directory or files are gone (ENOENT), or the kernel found the task
// dead while reading (ESRCH, or an empty file).
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) || errors.Is(err, errVanished)
}

var errVanished = errors.New("the file was empty: the process exited while it was read")

func readProcess(dir string, readFile func(string) ([]byte, error)) (Process, error) {
	var p Process
	for _, f := range [...]struct {
		name  string
		parse func([]byte, *Process) error
	}{{"stat", parseStat}, {"status", parseStatus}} {
		b, err := readFile(dir + "/" + f.name)
		if err != nil {
			return p, err
		}
		if len(b) == 0 {
			return p, errVanished
		}
		if err := f.parse(b, &p); err != nil {
			return p, err
		}
	}
	return p, nil
}

// parseStat decodes /proc/<pid>/stat (fs/proc/array.c, do_task_stat):
// "pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt
// majflt cmajflt utime stime cutime cstime priority nice num_threads
// itrealvalue starttime ...". The comm may hold spaces and parentheses, so
// it ends at the last ')'.
func parseStat(b []byte, p *Process) error {
	open := bytes.IndexByte(b, '(')
	closing := bytes.LastIndexByte(b, ')')
	if open < 1 || closing < open {
		return fmt.Errorf("malformed stat line %.64q: no (comm)", b)
	}
	pid, err := strconv.ParseInt(string(bytes.TrimSpace(b[:open])), 10, 32)
	if err != nil {
		return fmt.Errorf("malformed stat line %.64q: bad pid", b)
	}
	p.PID, p.TGID = int32(pid), int32(pid)
	p.Comm = string(b[open+1 : closing])
	f := bytes.Fields(b[closing+1:])
	// f[0] is field 3 (state); starttime is field 22, f[19].
	if len(f) < 20 {
		return fmt.Errorf("malformed stat line %.64q: %d fields after comm, want at least 20", b, len(f))
	}
	if len(f[0]) != 1 {
		return fmt.Errorf("malformed stat line %.64q: bad state %q", b, f[0])
	}
	p.State = f[0][0]
	ints := [...]struct {
		i   int
		dst *int32
	}{{1, &p.PPID}, {2, &p.PGID}, {3, &p.SID}}
	for _, x := range ints {
		v, err := strconv.ParseInt(string(f[x.i]), 10, 32)
		if err != nil {
			return fmt.Errorf("malformed stat line %.64q: field %d: %v", b, x.i+3, err)
		}
		*x.dst = int32(v)
	}
	threads, err := strconv.ParseInt(string(f[17]), 10, 32)
	if err != nil || threads < 0 {
		return fmt.Errorf("malformed stat line %.64q: bad num_threads %q", b, f[17])
	}
	p.Threads = int(threads)
	ticks, err := strconv.ParseUint(string(f[19]), 10, 64)
	if err != nil || ticks > uint64(1<<63-1)/uint64(time.Second/userHZ) {
		return fmt.Errorf("malformed stat line %.64q: bad starttime %q", b, f[19])
	}
	p.StartTime = time.Duration(ticks) * (time.Second / userHZ)
	return nil
}

// parseStatus reads the Uid and Gid lines of /proc/<pid>/status: real,
// effective, saved and filesystem ids.
func parseStatus(b []byte, p *Process) error {
	var haveUID, haveGID bool
	for line := range bytes.Lines(b) {
		var r, e *uint32
		switch {
		case bytes.HasPrefix(line, []byte("Uid:")):
			r, e, haveUID = &p.RUID, &p.EUID, true
		case bytes.HasPrefix(line, []byte("Gid:")):
			r, e, haveGID = &p.RGID, &p.EGID, true
		default:
			continue
		}
		f := bytes.Fields(line[4:])
		if len(f) < 2 {
			return fmt.Errorf("malformed status line %q", line)
		}
		for i, dst := range [...]*uint32{r, e} {
			v, err := strconv.ParseUint(string(f[i]), 10, 32)
			if err != nil {
				return fmt.Errorf("malformed status line %q: %v", line, err)
			}
			*dst = uint32(v)
		}
	}
	if !haveUID || !haveGID {
		return errors.New("status has no Uid or Gid line")
	}
	return nil
}
