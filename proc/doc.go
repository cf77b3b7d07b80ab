// Package proc receives process events from the Linux kernel: the process
// events connector (cn_proc, connector id 1:1, multicast group 1) reports
// every fork, exec, user, group and session id change, ptrace attach and
// detach, name change, core dump and exit on the machine.
//
//	l, err := proc.Listen(&proc.Config{Kinds: proc.KindExec | proc.KindExit})
//	if err != nil { ... }
//	defer l.Close()
//	var ev proc.Event
//	for {
//		if err := l.Next(&ev); err != nil { ... }
//		...
//	}
//
// [Listen] opens its own socket. [NewListener] subscribes on a
// connector.Conn the caller opened instead: one from connector.Dial with
// options of its own, or one on a fake kernel in unit tests, where package
// proctest plays the kernel's process events agent without privileges.
//
// [Listener.Next] fills a caller-owned Event and allocates nothing; the
// [Listener.Events] iterator yields the same with context cancellation.
// [Decode] turns a single connector.Message into an Event, for programs that
// read the socket themselves.
//
// # Privileges
//
// Since Linux 6.6 any user may listen: joining group 1 and subscribing need
// no capability. Before 6.6 both need CAP_NET_ADMIN, and Listen fails with
// an error matching os.ErrPermission without it. Listen always sends its
// subscription to the kernel directly, never addressed to the group (which
// would need CAP_NET_ADMIN on every kernel and reach every other listener).
//
// # Namespaces
//
// The connector exists only in the initial network namespace: elsewhere
// Listen fails with an error matching connector.ErrNotInitialNetNS. Open the
// socket in the host's namespace with Config.NetNS, or run there. The kernel
// also ignores, without replying, subscriptions from processes outside the
// initial user or PID namespace; Listen detects that before it subscribes,
// on evidence from the kernel that a mount namespace cannot fake, and fails
// with ErrNamespace at once (see ErrNamespace for what it can tell when). A kernel built without CONFIG_PROC_EVENTS gives
// ErrNoProcEvents. Every id in an event (pids, uids, gids) is an
// initial-namespace value.
//
// # Threads and processes
//
// The kernel reports tasks, that is threads. Event.PID is the task's own id
// (the kernel's pid, a thread id) and Event.TGID its thread group id, which
// user space calls the process id. A process's main thread has PID == TGID.
// Fork and exit events come for every thread: Event.IsThread tells a new or
// exiting thread (PID != TGID) from a process. A thread's exit has
// ExitSignal -1 and no parent fields. For fork events PID and TGID name the
// new child and ParentPID and ParentTGID its real parent; for a new thread
// that is the parent of the whole process, not the thread that created it.
//
// The exit code is a wait(2) status: Event.WaitStatus decodes it (exited
// with a status, or killed by a signal, with or without a core dump).
// Event.ExitSignal is something else: the signal the parent is sent.
//
// Timestamps are CLOCK_MONOTONIC nanoseconds; Event.Time converts them to
// wall-clock time (see there for the accuracy). Sequence numbers (Event.Seq)
// count per CPU; events from different CPUs are not ordered with each other.
//
// # Filtering
//
// Config.Kinds selects event kinds, KindNonzeroExit selecting failed exits
// only. On Linux 6.6 and later the kernel filters (struct proc_input), so
// unwanted events never cross into user space. Older kernels ignore the
// filter request without a reply; the Listener detects that (it sends the
// classic request right after the filter request and sees which the kernel
// acknowledged, so no wait is involved), subscribes the classic way and
// filters in user space. [Listener.Mode] says which happened. Events are always
// filtered in user space as well, because the kernel sends everything until
// it has processed the filter.
//
// # Other processes' acknowledgements
//
// The kernel acknowledges every subscription request, from any process,
// to every group-1 socket without a narrowing filter, and any local user may
// send requests: a flood of them could crowd a Listener's buffer and cost it
// real events. No Listener receives them: on Linux 6.6 and later even an
// unfiltered Listener (ModeAll) sets the kernel's filter to every event kind,
// which acknowledgements do not pass, and on older kernels it attaches a
// classic BPF socket filter that drops them.
//
// # Loss
//
// The kernel drops events when a listener's receive buffer is full, and
// events cannot be asked for again. A Listener never hides this: loss is
// delivered in the event stream as KindLost events, and the Listener keeps
// going.
//
//   - When the kernel reports an overrun (ENOBUFS), Next delivers a KindLost
//     event with Lost 0 and CPU CPUUnknown: some events were lost.
//   - In ModeAll and ModeUserFilter the Listener also follows each CPU's
//     sequence numbers, and turns each gap into a KindLost event with the
//     CPU and the count. The numbers are shared by every message the
//     kernel sends, acknowledgements included, so where a filter keeps
//     messages out a gap only says when to look: the count comes from the
//     socket's own drop counter, and the total reported equals what the
//     kernel dropped for the socket. The count arrives with the next event
//     from that CPU, or, for drops no gap has shown yet, as one KindLost
//     record with CPU CPUUnknown when a wait ends by deadline, Flush or an
//     Events ctx (see [Listener.Next]; in every mode, never counted twice).
//   - With the kernel filter (ModeKernelFilter) gaps mostly hold the events
//     filtered out, so the drop counter is read on gaps only after an
//     overrun was reported, until it shows no new drop: the events lost
//     while the socket stayed congested are counted that way too.
//     Config.NoENOBUFS would leave no overrun report, and so no count:
//     Listen refuses it with a subset of kinds unless Config.ExactLoss
//     is set, which makes the mode ModeUserFilter.
//     [Listener.Drops] returns the kernel's total of dropped messages for
//     the socket, in every mode.
//
// # Loss no socket sees
//
// Two paths in the kernel lose events without any socket's drop counter,
// overrun report or log showing it, and one thing looks like a loss (read
// in the kernel source: cn_proc.c, connector.c and af_netlink.c as of 6.6
// and later, and the pre-6.6 cn_proc.c):
//
//   - A failed allocation. cn_proc numbers each message from its CPU's
//     counter and then sends it (drivers/connector/cn_proc.c, send_msg);
//     the send allocates the message with GFP_NOWAIT (connector.c,
//     cn_netlink_send_mult: nlmsg_new), and on failure returns -ENOMEM,
//     which send_msg ignores. GFP_NOWAIT implies __GFP_NOWARN on current
//     kernels, so nothing is logged either. The sequence number was
//     taken, so a socket that receives every message the kernel sends to
//     group 1 sees the gap: [Config.ExactLoss] makes the Listener such a
//     socket and count it. Any filter (the kernel's, or the socket filter
//     that keeps other processes' acknowledgements out) makes gaps that
//     look the same, so without ExactLoss this loss is not reported.
//   - No listeners. Every event generator returns at once while the
//     kernel's global listener count is below 1 (proc_event_num_listeners),
//     taking no sequence number. Before 6.6 every IGNORE from a process
//     with CAP_NET_ADMIN lowers that count; since 6.6 an IGNORE lowers it
//     whenever the sending socket's previous request was not an IGNORE,
//     an invalid operation included (cn_proc_mcast_ctl), which lets any
//     local user lower it by alternating the two: in the kernel matrix a
//     uid-65534 process with no capability switched process events off
//     for the whole machine on 6.12 and 7.3 (6.1 refuses its requests with
//     EPERM; TestIntegrationListenerCountHazard). Nothing a listener
//     receives shows it, but the kernel acknowledges requests only while
//     the count is at least 1: [CheckEvents] asks, and reports
//     ErrEventsOff, and [Listener.Rearm] raises the count until events
//     flow again. A Listener itself sends one IGNORE, on Close, and only
//     after its own LISTEN.
//   - Not a loss, but it looks like one: an exit event names the parent
//     only until the parent reaps the task (see Event.ParentPID), so a
//     program that recognises its children's exits by parent misses some.
//
// Everything else is counted: a full receive buffer, and a failed copy in
// the multicast (net/netlink/af_netlink.c, do_one_broadcast: a failed
// skb_clone calls netlink_overrun for that socket and every later member),
// raise the socket's drop counter (sk_drops, [Listener.Drops]) and report
// ENOBUFS unless Config.NoENOBUFS. NETLINK_BROADCAST_ERROR changes only
// what the sender is told, and the kernel ignores what it is told.
//
// After a loss, rebuild state with [Snapshot], which lists the live
// processes from /proc. To lose less, raise Config.ReadBufferSize (or call
// [Listener.SetReadBuffer] when an overrun is reported) and read promptly.
//
// # Concurrency and allocation
//
// One goroutine reads a Listener (Next or Events); Close, Flush, Stats, Mode,
// Drops, SetReadBuffer and SetDeadline may be called from any goroutine, and
// Close and Flush unblock a pending read. The receive path reads many datagrams per system
// call into reused buffers and decodes in place: Next allocates nothing per
// event.
//
// # Errors
//
// Errors have one "proc: op: detail" shape; errors of package connector
// underneath keep matching with errors.Is and errors.As (for example
// connector.ErrClosed after Close). A nil argument is an error (a nil Conn
// for NewListener, a nil *Event for Next and Decode), except in package
// proctest's helpers, which return none and panic with a message that says
// what is nil.
//
// # Coexistence
//
// Any number of Listeners, in one process or many, receive every event
// independently. Each socket has its own port id and its own kernel filter,
// acknowledgements are matched on a random nonce (connector.Call) so other
// processes' ones never pass for the Listener's own, and Close unsubscribes
// only its own socket. On kernels before
// 6.6 the kernel keeps one global listener count: Close sends exactly one
// IGNORE, and only after a successful subscription. (If an acknowledgement
// is lost to a buffer overrun during Listen, the request is sent again; on
// those kernels the count can then stay one too high, which only keeps
// events flowing.) Close does not leave the group before closing the
// socket: closing leaves it, and lets Linux 6.6 and later free the socket's
// filter state.
package proc
