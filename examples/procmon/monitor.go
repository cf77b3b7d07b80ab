//go:build linux

package main

import (
	"path"
	"time"

	"github.com/cnlink/connector/proc"
	"golang.org/x/sys/unix"
)

// kindSet is a set of procmon event kinds (-e). procmon splits the kernel's
// fork into fork (a new process) and clone (a new thread).
type kindSet uint16

const (
	kFork kindSet = 1 << iota
	kClone
	kExec
	kExit
	kCoredump
	kComm
	kUID
	kGID
	kSID
	kPtrace
	kAll = kFork | kClone | kExec | kExit | kCoredump | kComm | kUID | kGID | kSID | kPtrace
)

var kindNames = []struct {
	k    kindSet
	name string
}{
	{kFork, "fork"}, {kClone, "clone"}, {kExec, "exec"}, {kExit, "exit"},
	{kCoredump, "coredump"}, {kComm, "comm"}, {kUID, "uid"}, {kGID, "gid"},
	{kSID, "sid"}, {kPtrace, "ptrace"},
}

// defaultKinds are what forkstat shows by default, plus core dumps.
const defaultKinds = kFork | kExec | kExit | kCoredump

// filter decides which events are shown.
type filter struct {
	kinds kindSet
	// subtree, when not nil, holds the process ids in the watched
	// subtrees: the -p roots and every process forked from them since.
	subtree map[int32]bool
	comms   []string // glob patterns; empty means all
}

func (f *filter) inTree(tgid int32) bool { return f.subtree == nil || f.subtree[tgid] }

func (f *filter) commOK(comm string) bool {
	if len(f.comms) == 0 {
		return true
	}
	for _, pat := range f.comms {
		if ok, _ := path.Match(pat, comm); ok {
			return true
		}
	}
	return false
}

// monitor turns process events into records. It keeps a table of live
// processes, filled from /proc at start and kept up to date by the events,
// so that forks inherit their parent's details without reading /proc, and
// exits can say how long a process lived and what it was.
type monitor struct {
	f     filter
	fs    *procFS
	users *users
	emit  func(*record)

	procs   map[int32]*procInfo
	threads map[int32]threadInfo // threads other than main threads
	// stale is set when events were lost: exits may be among them, and
	// the table then holds processes that are gone. prune drops them.
	stale     bool
	lastPrune time.Time
	// monoOffset is CLOCK_BOOTTIME - CLOCK_MONOTONIC in ns at start, to
	// convert /proc start times (boot time) to the events' clock.
	monoOffset int64

	stats summary
	rec   record
	// needComm: read the name at every exec (JSON output and -comm need
	// it; text output shows the command line).
	needComm bool
}

func newMonitor(f filter, fs *procFS, u *users, emit func(*record)) *monitor {
	m := &monitor{
		f: f, fs: fs, users: u, emit: emit,
		procs:   make(map[int32]*procInfo, 1024),
		threads: make(map[int32]threadInfo, 1024),
	}
	m.stats.init()
	var boot, mono unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot) == nil && unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono) == nil {
		m.monoOffset = boot.Nano() - mono.Nano()
	}
	return m
}

// seed fills the process table from a /proc snapshot taken after the
// subscription started, and the subtree filter from the -p roots.
func (m *monitor) seed(ps []proc.Process, roots []int32) {
	for i := range ps {
		p := &ps[i]
		info := &procInfo{
			tgid: p.PID, ppid: p.PPID, comm: p.Comm,
			ruid: p.RUID, euid: p.EUID, uidKnown: true,
			startFrom: "proc",
		}
		if st := int64(p.StartTime) - m.monoOffset; st > 0 {
			info.start = uint64(st)
		}
		m.procs[p.PID] = info
	}
	if roots != nil {
		m.setRoots(roots)
	}
	for _, info := range m.procs {
		if m.f.inTree(info.tgid) {
			m.fs.enrichRest(info)
		}
	}
}

// setRoots starts the subtree filter with the -p roots and their
// descendants among the known processes.
func (m *monitor) setRoots(roots []int32) {
	m.f.subtree = make(map[int32]bool)
	for _, r := range roots {
		m.f.subtree[r] = true
	}
	// Add the roots' existing descendants: walk each process's ancestry.
	for pid := range m.procs {
		for a, n := pid, 0; a > 0 && n < 4096; n++ {
			if m.f.subtree[a] {
				m.f.subtree[pid] = true
				break
			}
			pi := m.procs[a]
			if pi == nil {
				break
			}
			a = pi.ppid
		}
	}
}

// ensure makes sure p's /proc details were read.
func (m *monitor) ensure(p *procInfo) {
	if !p.enriched {
		m.fs.enrich(p)
	}
}

// handle processes one event.
func (m *monitor) handle(ev *proc.Event) {
	r := &m.rec
	*r = record{ev: ev, pid: ev.PID, tgid: ev.TGID, lifetime: -1}
	switch ev.Kind {
	case proc.KindFork:
		if ev.IsThread() {
			m.threads[ev.PID] = threadInfo{start: ev.Timestamp, tgid: ev.TGID}
			r.kind, r.k = "clone", kClone
			r.p = m.procs[ev.TGID]
			r.thread = true
			break
		}
		r.kind, r.k = "fork", kFork
		parent := m.procs[ev.ParentTGID]
		// A stale entry for a reused pid (its exit was lost) is
		// overwritten in place.
		child := m.procs[ev.TGID]
		if child == nil {
			child = &procInfo{}
		}
		wanted := m.f.inTree(ev.ParentTGID)
		if parent != nil {
			if wanted {
				m.ensure(parent)
			}
			*child = *parent
		} else {
			*child = procInfo{}
		}
		child.tgid, child.ppid = ev.TGID, ev.ParentTGID
		child.start, child.startFrom, child.execAt = ev.Timestamp, "fork", 0
		if parent == nil || parent.gone {
			// The parent is unknown or gone: read the child itself.
			child.enriched, child.gone = false, false
			if wanted {
				m.fs.enrich(child)
			}
		}
		m.procs[ev.TGID] = child
		if m.f.subtree != nil && m.f.subtree[ev.ParentTGID] {
			m.f.subtree[ev.TGID] = true
		}
		r.p = child
		r.parent = parent
	case proc.KindExec:
		r.kind, r.k = "exec", kExec
		p := m.procs[ev.TGID]
		if p == nil {
			p = &procInfo{tgid: ev.TGID, start: ev.Timestamp, startFrom: "exec"}
			m.procs[ev.TGID] = p
		}
		p.execAt = ev.Timestamp
		p.enriched, p.gone, p.cmdline, p.cmdTrunc = false, false, nil, false
		if m.f.inTree(ev.TGID) {
			// Read /proc now, before the process can exit.
			m.fs.enrichExec(p, m.needComm)
		}
		r.p = p
	case proc.KindExit:
		r.kind, r.k = "exit", kExit
		r.hasExit = true
		if ev.IsThread() {
			r.thread = true
			if th, ok := m.threads[ev.PID]; ok {
				r.lifetime, r.lifetimeFrom = since(ev.Timestamp, th.start), "fork"
				delete(m.threads, ev.PID)
			}
			r.p = m.procs[ev.TGID]
			// Thread exits are shown with thread creations (-e clone).
			if m.f.kinds&kClone == 0 {
				r.k = 0
			}
			break
		}
		p := m.procs[ev.TGID]
		if p == nil {
			p = &procInfo{tgid: ev.TGID, ppid: ev.ParentTGID, gone: true}
		} else {
			delete(m.procs, ev.TGID)
		}
		// Too late to read /proc now.
		if !p.enriched {
			p.enriched, p.gone = true, true
		}
		if ev.ParentTGID != 0 {
			p.ppid = ev.ParentTGID
		}
		if p.start != 0 {
			r.lifetime, r.lifetimeFrom = since(ev.Timestamp, p.start), p.startFrom
		}
		r.p = p
		defer func() {
			if m.f.subtree != nil {
				delete(m.f.subtree, ev.TGID)
			}
		}()
	case proc.KindCoredump:
		r.kind, r.k = "coredump", kCoredump
		r.p = m.procs[ev.TGID]
	case proc.KindComm:
		r.kind, r.k = "comm", kComm
		r.comm = ev.CommString()
		if p := m.procs[ev.TGID]; p != nil {
			if ev.IsProcess() {
				r.oldComm = p.comm
				p.comm = r.comm
			}
			r.p = p
		}
	case proc.KindUID:
		r.kind, r.k = "uid", kUID
		if p := m.procs[ev.TGID]; p != nil {
			p.ruid, p.euid, p.uidKnown = ev.RUID, ev.EUID, true
			r.p = p
		}
	case proc.KindGID:
		r.kind, r.k = "gid", kGID
		r.p = m.procs[ev.TGID]
	case proc.KindSID:
		r.kind, r.k = "sid", kSID
		r.p = m.procs[ev.TGID]
	case proc.KindPtrace:
		r.kind, r.k = "ptrace", kPtrace
		r.p = m.procs[ev.TGID]
	case proc.KindLost:
		r.kind = "lost"
		m.stats.lost(ev)
		m.stale = true
		m.emit(r) // always shown
		return
	default:
		r.kind = "unknown"
		m.stats.unknown++
		m.emit(r) // always shown: an unknown kernel event is news
		return
	}
	if !m.f.inTree(ev.TGID) {
		return
	}
	comm := r.comm
	if r.p != nil {
		comm = r.p.comm
	}
	if !m.f.commOK(comm) && !m.f.commOK(r.oldComm) {
		return
	}
	m.stats.count(r)
	switch {
	case r.parent != nil:
		m.stats.fork(r.parent)
	case ev.Kind == proc.KindExec:
		m.stats.exec(r.p)
	}
	if m.f.kinds&r.k == 0 {
		return
	}
	if r.p != nil {
		m.ensure(r.p)
		r.ppid = r.p.ppid
	}
	if ev.Kind == proc.KindFork {
		r.ppid = ev.ParentTGID
	}
	m.emit(r)
}

type threadInfo struct {
	start uint64
	tgid  int32
}

// prune drops the processes and threads that no longer exist from the
// table, after events were lost (their exits may have been among them). It
// lists /proc once, at most once a second; procmon calls it when the event
// queue runs empty.
func (m *monitor) prune() {
	if !m.stale || time.Since(m.lastPrune) < time.Second {
		return
	}
	m.stale, m.lastPrune = false, time.Now()
	alive, err := m.fs.pids()
	if err != nil {
		return
	}
	for pid := range m.procs {
		if !alive[pid] {
			delete(m.procs, pid)
			if m.f.subtree != nil {
				delete(m.f.subtree, pid)
			}
		}
	}
	for tid, th := range m.threads {
		if !alive[th.tgid] {
			delete(m.threads, tid)
		}
	}
}

func since(now, start uint64) int64 {
	if now < start {
		return 0
	}
	return int64(now - start)
}

// summary collects the --stats numbers.
type summary struct {
	start    time.Time
	counts   map[string]uint64
	forkers  map[int32]*counter
	execs    map[string]*counter
	lostN    uint64
	overruns uint64
	unknown  uint64
}

type counter struct {
	name string
	n    uint64
}

func (s *summary) init() {
	s.start = time.Now()
	s.counts = map[string]uint64{}
	s.forkers = map[int32]*counter{}
	s.execs = map[string]*counter{}
}

func (s *summary) count(r *record) {
	k := r.kind
	if r.kind == "exit" && r.thread {
		k = "thread-exit"
	}
	s.counts[k]++
}

// name returns a short name for p: its comm, or else the program of its
// command line, or "<gone>" when it exited before /proc could be read.
func (p *procInfo) name() string {
	switch {
	case p.comm != "":
		return p.comm
	case len(p.cmdline) > 0:
		return path.Base(p.cmdline[0])
	}
	return "<gone>"
}

func (s *summary) fork(parent *procInfo) {
	c := s.forkers[parent.tgid]
	if c == nil {
		c = &counter{}
		s.forkers[parent.tgid] = c
	}
	c.name = parent.name()
	c.n++
}

func (s *summary) exec(p *procInfo) {
	name := p.name()
	if len(p.cmdline) > 0 {
		name = p.cmdline[0]
	}
	c := s.execs[name]
	if c == nil {
		c = &counter{name: name}
		s.execs[name] = c
	}
	c.n++
}

func (s *summary) lost(ev *proc.Event) {
	if ev.Lost == 0 {
		s.overruns++
	}
	s.lostN += uint64(ev.Lost)
}
