// Package cntest is a fake netlink connector kernel for unit tests: code
// built on package connector runs against it unchanged, in any process,
// without privileges and on every system the module builds for (the README
// lists them).
//
//	k := cntest.New(nil)
//	c, err := k.Dial(&connector.Config{Groups: []connector.Group{20}})
//
// The Conn that [Kernel.Dial] returns is a real *[connector.Conn], set up and
// checked as [connector.Dial] sets up a socket; only the socket under it is
// fake. Several Conns on one Kernel get their own port ids
// and can message each other by port and by group with the kernel's
// semantics, and Handle installs fake kernel agents that answer what the code
// under test sends to the kernel.
//
// # Driving the fake
//
// [Kernel.Handle] registers a HandlerFunc for a callback id; it sees every
// message sent to the kernel (port 0) for that id and returns the replies to
// unicast to the requester or multicast on a group. [Kernel.Multicast] and
// [Kernel.Unicast] send messages as a kernel agent would, and [Kernel.InjectRaw]
// queues arbitrary bytes from an arbitrary sender: malformed datagrams,
// several netlink messages in one datagram (concatenate Datagram results),
// w1-style bundles (Bundle), or a userspace port pretending to be a kernel
// agent. [Kernel.Overrun] makes a socket's next receive fail with ENOBUFS, as
// after the kernel dropped a message; a full queue does the same on its own.
//
// # Synchronising tests
//
// Delivery is synchronous: a message is queued at its receivers before the
// Send, Multicast or InjectRaw that sent it returns, and a handler's replies
// before the request's Send returns. To act while the code under test is
// blocked, wait for that state instead of sleeping: WaitReceiving returns once
// a receive waits on a socket (to test Close or a deadline), and WaitRefused
// once a unicast was refused because the receiver's queue was full (the
// sending Conn then waits for room). Queued, Drops and Refused report a
// socket's state.
//
// # Checking what the code sent
//
// [Kernel.Requests] lists every message that reached the kernel with its
// netlink header as written, so tests can check the encoding (the kernel's
// connector expects nlmsg_len to cover the message, and by convention type
// NLMSG_DONE and flags 0). [Kernel.Rejected] lists the datagrams the real
// kernel would have dropped silently, with the reason. CheckRequest wraps a
// handler with a comparison against an expected request.
//
// # Fidelity
//
// Datagrams are built byte for byte as the kernel builds them, by this
// package's own encoder rather than package connector's, so a bug in one
// shows up against the other; datagrams sent to the kernel are decoded
// independently with the kernel's own checks. The fake models: port ids (the
// first socket gets 1000, later ones ids above 2^31, like the negative ids the
// kernel hands out); group numbers 1 to 32 with the cn_bind rule for
// unprivileged sockets (odd groups only, see [Kernel.DialUnprivileged]);
// CAP_NET_ADMIN for unicast and multicast between userspace sockets; the
// sender's exclusion from its own multicast and the use of only the lowest
// group bit; multicasts also reaching the kernel; receive buffers in bytes
// ([Options.QueueLen], Conn.SetReadBuffer), each datagram charged the
// truesize the kernel charges it ([Options.Release]), where kernel and
// multicast messages are dropped with a one-time ENOBUFS and congestion until
// the queue is read empty, NETLINK_NO_ENOBUFS, and userspace unicast that
// waits instead;
// truncation of datagrams larger than the Conn's MessageBufferSize; read
// deadlines and Close while a receive waits; and the initial network
// namespace ([Options.NotInitialNetNS]); and the kernel's buffer size
// arithmetic ([Options.RmemMax], [Options.WmemMax]). It does not model BPF
// socket filters or SyscallConn (both fail with [connector.ErrNotSupported]),
// credentials,
// or kernel agents other than those a test registers. The package's own
// integration tests run the same scenarios on real sockets and on the fake
// and compare the results.
//
// # Concurrency
//
// A Kernel is safe for concurrent use by any number of goroutines, and so are
// the Conns it returns (see [connector.Conn]). Handlers run on the goroutine
// that sent the request, without locks held; they may call the Kernel's
// methods, and must be safe for concurrent use if several goroutines send to
// the same id. Options, Reply, Request, Rejection and NetlinkHeader are plain
// values, and the encoding functions (Datagram, Bundle, AppendNetlink,
// AppendMessage) are safe to call from any goroutine.
package cntest
