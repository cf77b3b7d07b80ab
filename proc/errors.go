package proc

import "errors"

// Errors returned by Listen and NewListener, besides those of package connector (notably
// connector.ErrNotInitialNetNS when the socket is not in the initial network
// namespace, and errors matching os.ErrPermission). Test for them with
// errors.Is.
var (
	// ErrNoProcEvents reports a kernel built without CONFIG_PROC_EVENTS:
	// /proc/net/connector lists no cn_proc line, so nothing answers a
	// subscription.
	ErrNoProcEvents = errors.New("this kernel has no process events connector (no cn_proc in /proc/net/connector): build it with CONFIG_PROC_EVENTS=y")

	// ErrNamespace reports that the caller is not in the initial user and
	// PID namespaces. The kernel then ignores subscription requests without
	// any reply (events may still arrive, but only while another process
	// on the host subscribes). Run the listener in the host's user and PID
	// namespaces, for example outside the container.
	//
	// The evidence is the namespace files the kernel hands out for a pidfd
	// of this process (Linux 6.11 and later), or else /proc/self/ns when
	// they are really on nsfs, compared with the initial namespaces' fixed
	// inode numbers. Where neither is available (older kernels with a /proc
	// that is not the kernel's), Listen cannot tell in advance: it then
	// waits for the acknowledgement and fails with ErrNoAck, saying what it
	// could not determine.
	ErrNamespace = errors.New("the kernel ignores process event subscriptions from a non-initial user or PID namespace: run in the host's namespaces")

	// ErrNoAck reports that the kernel did not acknowledge a subscription
	// request within Config.AckTimeout, for no reason that could be
	// determined.
	ErrNoAck = errors.New("the kernel did not acknowledge the process event subscription")

	// ErrEventsOff reports that the kernel generates no process events at
	// all: its global listener count (proc_event_num_listeners) is below 1,
	// so every event generator returns before building an event, for every
	// listener, and nothing in any listener's stream shows it (see "Loss no
	// socket sees" in the package documentation). CheckEvents finds it; a
	// Listener's Rearm turns events back on.
	ErrEventsOff = errors.New("the kernel generates no process events: its listener count is below 1 (a process sent IGNORE once too often, or, since Linux 6.6, any local user alternated an invalid request and IGNORE)")

	// ErrConnInUse reports a NewListener on a Conn that already has a
	// Listener: a Listener takes its Conn over (it reads every message
	// the Conn receives), so two on one Conn would take each other's
	// events. Open a Conn per Listener.
	ErrConnInUse = errors.New("the Conn already has a Listener, which reads every message on it: open another Conn for another Listener")
)

// nilCtx is the error of an entry point given a nil context.Context: op is
// its operation ("check events", "rearm", "events").
func nilCtx(op string) error {
	return errors.New("proc: " + op + ": ctx is nil: give it a context.Context (context.Background() for none)")
}
