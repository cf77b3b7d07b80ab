package proc

// Exported for the external tests (package proc_test), which use proctest:
// proctest imports proc, so tests that use it cannot be in package proc.

// SetNamespaceCheck replaces the namespace check and returns a function
// that restores it.
func SetNamespaceCheck(f func() error) (restore func()) {
	old := namespaceCheck
	namespaceCheck = f
	return func() { namespaceCheck = old }
}

// Match reports whether the Listener's user-space filter passes ev.
func (l *Listener) Match(ev *Event) bool { return l.match(ev) }

// EventLen is sizeof(struct proc_event).
const EventLen = eventLen

// SetDropCounter makes the Listener read its socket's drop counter with f:
// on a cntest fake, which has no socket, the fake kernel's count.
func SetDropCounter(l *Listener, f func() (uint64, error)) {
	l.loss.setDrops(f)
}

// SetMaxEarly sets how many messages a handshake keeps for the Listener and
// returns a function that restores it.
func SetMaxEarly(n int) (restore func()) {
	old := maxEarly
	maxEarly = n
	return func() { maxEarly = old }
}

// SetKernelVersion makes the handshake take the kernel for one before 6.6
// (old) or 6.6 and later, as uname would tell, whatever its Conn; it returns
// a function that restores it.
func SetKernelVersion(old bool) (restore func()) {
	saved := kernelOf
	v := since66
	if old {
		v = before66
	}
	kernelOf = func(*handshake) (string, int) { return "test", v }
	return func() { kernelOf = saved }
}
