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

// commLen is the longest process name the kernel keeps (TASK_COMM_LEN 16,
// include/linux/sched.h, less the NUL).
const commLen = 15

// filter decides which events are shown.
type filter struct {
	kinds kindSet
	// subtree, when not nil, holds the process ids in the watched
	// subtrees: the -p roots alive at start and every process forked from
	// them since. A process leaves it when its thread group ends.
	subtree map[int32]bool
	comms   []string // glob patterns; empty means all
}

func (f *filter) inTree(tgid int32) bool { return f.subtree == nil || f.subtree[tgid] }

// nameOK reports whether a name passes -comm.
func (f *filter) nameOK(name string) bool {
	for _, pat := range f.comms {
		if ok, _ := path.Match(pat, name); ok {
			return true
		}
	}
	return false
}

// commOK reports whether a task passes -comm: its kernel name (at most 15
// bytes) or, since a pattern may be written for the full name, the base
// name of the program in its command line (argv[0]).
func (f *filter) commOK(comm string, p *procInfo) bool {
	if len(f.comms) == 0 {
		return true
	}
	if f.nameOK(comm) {
		return true
	}
	if p != nil && len(p.cmdline) > 0 {
		if base := path.Base(p.cmdline[0]); base != comm && f.nameOK(base) {
			return true
		}
	}
	return false
}

// monitor turns process events into records. It keeps a table of live
// processes (thread groups) and of their threads, filled from /proc at start
// and kept up to date by the events, so that forks inherit their parent's
// details without reading /proc, and exits can say how long a process lived
// and what it was.
//
// A process ends when its thread group ends: when the last of its tasks
// exits. The main thread's exit is the process's end only when no other
// thread is alive; otherwise (pthread_exit in main, or a thread's execve,
// which makes the main thread exit and then carries on under its pid) the
// process lives on, and its end is the exit of its last task.
type monitor struct {
	f     filter
	fs    *procFS
	users *users
	emit  func(*record)

	procs   map[int32]*procInfo
	threads map[int32]threadInfo // live threads other than main threads, by tid
	// stale is set when events were lost: exits may be among them, and
	// the table then holds processes that are gone. prune drops them.
	stale     bool
	lastPrune time.Time
	// monoOffset is CLOCK_BOOTTIME - CLOCK_MONOTONIC in ns at start, to
	// convert /proc start times (boot time) to the events' clock.
	monoOffset int64
	// treeEnded is set when -p was given and the last watched process
	// ended: procmon then stops.
	treeEnded bool

	stats summary
	rec   record
	// pre holds what /proc said at execs that rang the doorbell and
	// whose events have not come out of the main socket yet (preExec).
	pre    map[preKey]preRead
	preGen uint64 // drains of the main socket so far
	// needComm: read the name at every exec (JSON output and -comm need
	// it; text output shows the command line).
	needComm bool
	// threadComm: read a new thread's own name at its creation (when
	// thread records are shown: it is the creating thread's name, which
	// procmon does not otherwise know).
	threadComm bool
}

// threadInfo is what procmon knows about a thread other than a main thread.
// Its name and user ids are its own: the kernel keeps them per task.
type threadInfo struct {
	tgid       int32
	start      uint64
	comm       string
	ruid, euid uint32
	uidKnown   bool
}

func newMonitor(f filter, fs *procFS, u *users, emit func(*record)) *monitor {
	m := &monitor{
		f: f, fs: fs, users: u, emit: emit,
		procs:   make(map[int32]*procInfo, 1024),
		threads: make(map[int32]threadInfo, 1024),
		pre:     make(map[preKey]preRead),
	}
	m.stats.init()
	var boot, mono unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot) == nil && unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono) == nil {
		m.monoOffset = boot.Nano() - mono.Nano()
	}
	return m
}

// seed fills the process table from a /proc snapshot taken after the
// subscription started, and the subtree filter from the -p roots. It
// returns the roots that are not alive: they are not watched, since a later
// process with a reused pid would be another process.
func (m *monitor) seed(ps []proc.Process, roots []int32) (dead []int32) {
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
	for _, info := range m.procs {
		if pp := m.procs[info.ppid]; pp != nil {
			info.parentStart = pp.start
		}
	}
	if roots != nil {
		dead = m.setRoots(roots)
	}
	for i := range ps {
		info := m.procs[ps[i].PID]
		if !m.f.inTree(info.tgid) {
			continue
		}
		m.fs.enrichRest(info)
		if ps[i].Threads > 1 {
			m.seedThreads(info)
		}
	}
	return dead
}

// seedThreads adds the threads of a process that was running at start.
func (m *monitor) seedThreads(p *procInfo) {
	for _, tid := range m.fs.tasks(p.tgid) {
		if tid == p.tgid {
			continue
		}
		th := threadInfo{tgid: p.tgid, comm: p.comm, ruid: p.ruid, euid: p.euid, uidKnown: p.uidKnown}
		if c, ok := m.fs.threadComm(p.tgid, tid); ok {
			th.comm = c
		}
		m.threads[tid] = th
		p.nthreads++
	}
}

// setRoots starts the subtree filter with the -p roots that are alive and
// their descendants among the known processes, and returns the others.
func (m *monitor) setRoots(roots []int32) (dead []int32) {
	m.f.subtree = make(map[int32]bool)
	for _, r := range roots {
		if m.procs[r] == nil {
			dead = append(dead, r)
			continue
		}
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
	if len(m.f.subtree) == 0 {
		m.treeEnded = true
	}
	return dead
}

// ensure makes sure p's /proc details were read.
func (m *monitor) ensure(p *procInfo) {
	if !p.enriched {
		m.fs.enrich(p)
	}
}

// refreshParent makes p's parent current. A process inherits its parent
// at fork; when that parent ends, the kernel reparents it (to a subreaper or
// init) without an event. A parent that is no longer the same live
// process in the table means p.ppid is stale: it is read from /proc, or
// becomes 0 (unknown) when p is gone too.
func (m *monitor) refreshParent(p *procInfo) {
	if p.ppid <= 0 {
		return
	}
	if pp := m.procs[p.ppid]; pp != nil && pp.start == p.parentStart && !pp.leaderExited {
		// (A group whose main thread exited may be ending: its
		// children can be reparented before its last exit event.)
		return
	}
	ppid, ok := m.fs.parent(p.tgid)
	if !ok {
		p.ppid, p.parentStart = 0, 0
		return
	}
	p.ppid, p.parentStart = ppid, 0
	if pp := m.procs[ppid]; pp != nil {
		p.parentStart = pp.start
	}
}

// taskFields sets the record's per-task fields: those of the thread when
// the event is about a thread other than the main thread, else the
// process's.
func (r *record) taskFields(th *threadInfo) {
	switch {
	case th != nil:
		r.comm, r.ruid, r.euid, r.uidKnown = th.comm, th.ruid, th.euid, th.uidKnown
	case r.thread:
		// A thread procmon does not know (its creation was lost):
		// its name is not known; its ids are likely the process's.
		if r.p != nil {
			r.ruid, r.euid, r.uidKnown = r.p.ruid, r.p.euid, r.p.uidKnown
		}
	case r.p != nil:
		r.comm, r.ruid, r.euid, r.uidKnown = r.p.comm, r.p.ruid, r.p.euid, r.p.uidKnown
	}
}

// handle processes one event.
func (m *monitor) handle(ev *proc.Event) {
	r := &m.rec
	*r = record{ev: ev, pid: ev.PID, tgid: ev.TGID, thread: ev.IsThread(), lifetime: -1}
	var th *threadInfo
	var thv threadInfo
	if r.thread {
		if t, ok := m.threads[ev.PID]; ok {
			thv = t
			th = &thv
		}
	}
	switch ev.Kind {
	case proc.KindFork:
		if r.thread {
			m.clone(ev, r)
			return
		}
		r.kind, r.k = "fork", kFork
		parent := m.procs[ev.ParentTGID]
		// A stale entry for a reused pid (its exit was lost) is
		// overwritten in place.
		child := m.procs[ev.TGID]
		seededThreads := 0
		if child == nil {
			child = &procInfo{}
		} else if child.startFrom == "proc" {
			// Listed from /proc at start already (it was forked
			// between the subscription and the listing): keep the
			// threads found there.
			seededThreads = child.nthreads
		}
		wanted := m.f.inTree(ev.ParentTGID)
		if parent != nil {
			if wanted {
				m.ensure(parent)
			}
			*child = *parent
			child.parentStart = parent.start
		} else {
			*child = procInfo{}
		}
		child.tgid, child.ppid = ev.TGID, ev.ParentTGID
		child.start, child.startFrom, child.execAt = ev.Timestamp, "fork", 0
		child.nthreads, child.leaderExited = seededThreads, false
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
		if p.nthreads > 0 {
			// execve ends every other thread of the process; one of
			// them may have been the caller, which takes over the
			// pid without an exit event of its own.
			for tid, t := range m.threads {
				if t.tgid == ev.TGID {
					delete(m.threads, tid)
				}
			}
		}
		p.nthreads, p.leaderExited = 0, false
		p.execAt = ev.Timestamp
		p.enriched, p.gone, p.cmdline, p.cmdTrunc = false, false, nil, false
		if m.f.inTree(ev.TGID) {
			if x, ok := m.takePre(ev); ok {
				// Read when the exec rang the doorbell.
				m.fs.applyExec(p, &x)
			} else {
				// Read /proc now, before the process can exit.
				m.fs.enrichExec(p, m.needComm)
			}
			m.refreshParent(p)
		}
		r.p = p
	case proc.KindExit:
		if m.exit(ev, r, th) {
			return
		}
	case proc.KindCoredump:
		r.kind, r.k = "coredump", kCoredump
		r.p = m.procs[ev.TGID]
	case proc.KindComm:
		r.kind, r.k = "comm", kComm
		r.newComm = ev.CommString()
		r.p = m.procs[ev.TGID]
		switch {
		case r.thread && th != nil:
			r.oldComm = th.comm
			th.comm = r.newComm
			m.threads[ev.PID] = *th
		case !r.thread && r.p != nil:
			r.oldComm = r.p.comm
			r.p.comm = r.newComm
		}
	case proc.KindUID:
		r.kind, r.k = "uid", kUID
		r.p = m.procs[ev.TGID]
		// Credentials belong to the task: a thread's setuid(2) system
		// call changes that thread only (the C library repeats it in
		// every thread, and each gets its own event).
		switch {
		case r.thread && th != nil:
			th.ruid, th.euid, th.uidKnown = ev.RUID, ev.EUID, true
			m.threads[ev.PID] = *th
		case !r.thread && r.p != nil:
			r.p.ruid, r.p.euid, r.p.uidKnown = ev.RUID, ev.EUID, true
		}
	case proc.KindGID:
		r.kind, r.k = "gid", kGID
		r.p = m.procs[ev.TGID]
	case proc.KindSID:
		r.kind, r.k = "sid", kSID
		r.p = m.procs[ev.TGID]
		if r.p != nil {
			// setsid(2) leaves the controlling terminal behind.
			r.p.tty, r.p.ttyKnown = 0, true
		}
	case proc.KindPtrace:
		r.kind, r.k = "ptrace", kPtrace
		r.p = m.procs[ev.TGID]
	case proc.KindLost:
		r.kind = "lost"
		if ev.Timestamp == 0 {
			// An overrun has no kernel timestamp: it is stamped when
			// procmon noticed it, on the events' clock.
			ev.Timestamp = monoNow()
		}
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
	r.taskFields(th)
	if ev.Kind == proc.KindComm {
		r.comm = r.newComm
	}
	m.show(r)
}

// preKey names an exec event.
type preKey struct {
	tgid int32
	ts   uint64
}

type preRead struct {
	x   execRead
	gen uint64
}

// maxPre bounds the execs read ahead of their events; beyond it, the main
// socket is read at once.
const maxPre = 1024

// preExec reads the /proc details of an exec that rang the doorbell, for
// its event to use when it comes out of the main socket (takePre). It
// reports false when it did not: with -p, whether the process is watched
// depends on the events queued before the exec.
func (m *monitor) preExec(ev *proc.Event) bool {
	if m.f.subtree != nil || len(m.pre) >= maxPre {
		return false
	}
	var x execRead
	m.fs.readExec(ev.TGID, m.needComm, &x)
	m.pre[preKey{ev.TGID, ev.Timestamp}] = preRead{x, m.preGen}
	return true
}

// takePre returns (and forgets) what preExec read for ev.
func (m *monitor) takePre(ev *proc.Event) (execRead, bool) {
	if len(m.pre) == 0 {
		return execRead{}, false
	}
	k := preKey{ev.TGID, ev.Timestamp}
	p, ok := m.pre[k]
	if ok {
		delete(m.pre, k)
	}
	return p.x, ok
}

// sweepPre is called after each read of the main socket to its end: an exec
// read ahead whose event did not come in the two reads since never will (the
// main socket lost it, and says so).
func (m *monitor) sweepPre() {
	m.preGen++
	if len(m.pre) == 0 {
		return
	}
	for k, p := range m.pre {
		if m.preGen-p.gen > 2 {
			delete(m.pre, k)
		}
	}
}

// show counts a record and emits it if the filters let it through.
func (m *monitor) show(r *record) {
	ev := r.ev
	if !m.f.inTree(r.tgid) {
		return
	}
	if !m.f.commOK(r.comm, r.p) && (r.oldComm == "" || !m.f.commOK(r.oldComm, nil)) && (r.newComm == "" || !m.f.commOK(r.newComm, nil)) {
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
		if !r.p.enriched {
			m.ensure(r.p)
			if !r.thread {
				r.comm = r.p.comm
			}
		}
		if r.ppid == 0 {
			r.ppid = r.p.ppid
		}
		if !r.uidKnown && r.p.uidKnown {
			r.ruid, r.euid, r.uidKnown = r.p.ruid, r.p.euid, true
		}
	}
	if ev.Kind == proc.KindFork {
		r.ppid = ev.ParentTGID
	}
	m.emit(r)
}

// clone handles the creation of a thread.
func (m *monitor) clone(ev *proc.Event, r *record) {
	r.kind, r.k = "clone", kClone
	p := m.procs[ev.TGID]
	th := threadInfo{tgid: ev.TGID, start: ev.Timestamp}
	if old, seen := m.threads[ev.PID]; seen && old.tgid == ev.TGID && p != nil {
		// Listed from /proc at start already (it was created between
		// the subscription and the listing): not a second thread.
		p.nthreads--
	}
	if p != nil {
		p.nthreads++
		// A new thread has the name and credentials of the thread that
		// created it, which the event does not name: the main thread's
		// are the likeliest. When thread records are shown, its own
		// name is read.
		th.comm, th.ruid, th.euid, th.uidKnown = p.comm, p.ruid, p.euid, p.uidKnown
	}
	if m.threadComm && m.f.inTree(ev.TGID) {
		if c, ok := m.fs.threadComm(ev.TGID, ev.PID); ok {
			th.comm = c
		}
	}
	m.threads[ev.PID] = th
	r.p = p
	r.taskFields(&th)
	m.show(r)
}

// exit handles a task's exit. It reports whether the record is done with
// (nothing more to show).
func (m *monitor) exit(ev *proc.Event, r *record, th *threadInfo) bool {
	p := m.procs[ev.TGID]
	r.p = p
	if r.thread {
		// A thread's exit, shown with thread creations (-e clone).
		r.kind, r.k = "exit", kClone
		if th != nil {
			r.lifetime, r.lifetimeFrom = since(ev.Timestamp, th.start), "fork"
			delete(m.threads, ev.PID)
			if p != nil && p.nthreads > 0 {
				p.nthreads--
			}
		}
		r.taskFields(th)
		m.show(r)
		if p != nil && p.leaderExited && p.nthreads == 0 && th != nil {
			// The last task of a group whose main thread exited
			// earlier: now the process ends, with this status.
			m.processEnd(ev, p, ev.TGID)
		}
		return true
	}
	if p != nil && p.nthreads > 0 {
		// The main thread exits while other threads live on: the
		// process does not end yet. (When one of them calls execve,
		// the exec event follows under this pid.)
		p.leaderExited = true
		if ev.ParentTGID != 0 {
			p.ppid, p.parentStart = ev.ParentTGID, 0
			if pp := m.procs[ev.ParentTGID]; pp != nil {
				p.parentStart = pp.start
			}
		}
		r.kind, r.k = "leader-exit", kClone
		r.threadsLeft = p.nthreads
		r.taskFields(nil)
		m.show(r)
		return true
	}
	m.processEnd(ev, p, ev.TGID)
	return true
}

// processEnd shows the end of a process (thread group) and drops it from
// the table. ev is the exit of its last task.
func (m *monitor) processEnd(ev *proc.Event, p *procInfo, tgid int32) {
	r := &m.rec
	*r = record{ev: ev, kind: "exit", k: kExit, pid: tgid, tgid: tgid, lifetime: -1, groupEnd: true}
	if p == nil {
		p = &procInfo{tgid: tgid, ppid: ev.ParentTGID, gone: true}
	} else {
		delete(m.procs, tgid)
	}
	// Too late to read /proc now.
	if !p.enriched {
		p.enriched, p.gone = true, true
	}
	if ev.ParentTGID != 0 && ev.TGID == tgid && !ev.IsThread() {
		p.ppid = ev.ParentTGID
	}
	if p.start != 0 {
		r.lifetime, r.lifetimeFrom = since(ev.Timestamp, p.start), p.startFrom
	}
	r.p = p
	r.ppid = p.ppid
	r.taskFields(nil)
	m.show(r)
	if m.f.subtree != nil && m.f.subtree[tgid] {
		delete(m.f.subtree, tgid)
		if len(m.f.subtree) == 0 {
			m.treeEnded = true
		}
	}
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
			if m.f.subtree != nil && m.f.subtree[pid] {
				delete(m.f.subtree, pid)
				if len(m.f.subtree) == 0 {
					m.treeEnded = true
				}
			}
		}
	}
	for tid, th := range m.threads {
		if !alive[th.tgid] {
			delete(m.threads, tid)
		}
	}
}

// monoNow reads CLOCK_MONOTONIC in nanoseconds, the clock of event
// timestamps.
func monoNow() uint64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return uint64(ts.Nano())
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
