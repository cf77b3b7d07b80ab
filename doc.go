// Package connector talks to the Linux netlink connector (NETLINK_CONNECTOR),
// the kernel's message bus between kernel agents and userspace.
//
// A connector message is a cn_msg header — a callback id (idx, val), seq,
// ack, len and flags — followed by a payload, carried in a netlink datagram.
// A kernel agent registers a callback for an id; userspace joins the agent's
// multicast group (group number = idx) to hear from it, and sends to the
// kernel (port 0) to talk to it. With CAP_NET_ADMIN, userspace sockets can
// also message each other by port id or group. The best-known agent is the
// process events connector (id 1:1); see the subpackage proc. Package cntest
// is a fake kernel for unit tests that need no privileges.
//
// # Messages, ids and groups
//
// [Message] is a cn_msg with its payload; [CBID] is the callback id, with
// named values for every id in include/uapi/linux/connector.h; [Group] is a
// group number from 1 to 32. The socket API uses both group numbers (joining
// a group) and group bitmasks (bind, source addresses); the Conn takes and
// returns group numbers only and converts at the edge, so the two cannot be
// mixed up. [Group.Mask], [GroupMask] and [GroupsFromMask] convert
// explicitly where a bitmask is wanted. Protocol conventions such as seq/ack correlation belong to each agent:
// the proc connector, for instance, answers a request with ack+1 and a seq of
// its own.
//
// # Receiving
//
// There are two tiers, with one implementation. A [Reader]
// ([Conn.NewReader]) is the fast path: it asks the kernel for many datagrams
// per system call (recvmmsg) into a batch of pooled buffers, parses them in
// place and returns messages whose Data aliases the buffer. In steady state
// it allocates nothing per message. [Conn.Receive] is a Reader with a batch
// of one whose messages are copied out for the caller to own: simpler, and
// it allocates. Both stay on the Go runtime's network poller, so deadlines
// and [Conn.Close] work while they wait, and [Conn.Flush] wakes them: they
// return what is still queued without blocking, then [ErrFlushed].
//
// A datagram may hold several netlink messages, and a netlink message may pack
// several cn_msg records back to back (w1 does this); both tiers return each
// record as its own Message. The kernel sends every connector message with
// netlink type NLMSG_DONE and flags 0. That is not the end of a stream, and no
// netlink acknowledgements ever come: the connector has none.
//
// # Buffer lifetime
//
// A Message returned by [Reader.Next] is valid until the next call to Next
// or [Reader.Release] on that Reader: copy Data to keep it. Messages
// returned by [Conn.Receive] are the caller's; those of
// [Message.UnmarshalBinary] and [ParseMessages] alias the bytes they were
// decoded from.
//
// # Senders and spoofing
//
// Every received message comes with its [Sender]: the port id of the socket
// that sent it (0 is the kernel; userspace cannot bind port 0) and the group
// it was multicast on. Any process with CAP_NET_ADMIN can multicast on any
// group, including a kernel agent's. On the groups reserved for kernel
// agents (1 to 10) a Conn therefore drops messages from userspace senders
// and counts them in [Stats.Foreign] ([SendersDefault]); [SendersKernelOnly]
// applies the same rule to every group and to unicasts, and [SendersAny]
// accepts everyone ([Config.Senders]). Do not trust the nlmsg_pid field of the
// netlink header: the sender chooses it.
//
// # Loss
//
// When the receive buffer is full the kernel drops multicast messages. The
// next read returns an error matching [ErrOverrun] before any queued message;
// the Conn stays usable, and the next read returns what was queued. Until the
// queue has been drained completely, the kernel keeps dropping new messages,
// so drain quickly. Raise [Config.ReadBufferSize] to absorb bursts (forcing past
// net.core.rmem_max needs CAP_NET_ADMIN). With [Config.NoENOBUFS] the kernel
// stops reporting overruns and loss becomes silent unless the protocol can
// count it (package proc counts sequence gaps). A datagram larger than
// [Config.MessageBufferSize] is reported as [ErrTruncated] and never delivered
// cut. Every drop is counted in [Stats].
//
// # Privileges
//
// Sending to the kernel (port 0) needs no privilege at the socket level; each
// kernel agent checks what it wants (proc needs none on Linux 6.6 and later,
// dm-log-userspace and uvesafb need CAP_SYS_ADMIN). Sending to another
// userspace port or to a group needs CAP_NET_ADMIN. Joining groups needs
// CAP_NET_ADMIN before Linux 6.6; from 6.6 on, unprivileged sockets may join
// odd-numbered groups (the kernel means to allow only group 1, the proc
// connector, but tests the group number as a bitmask). Permission errors match
// os.ErrPermission and name the capability and what it was needed for (the
// port, the group, the groups); a socket filter locked with SO_LOCK_FILTER,
// which no capability unlocks, is said to be locked ([Conn.SetBPF]).
//
// # Namespaces
//
// The kernel side of the connector exists only in the initial network
// namespace. A socket opened in another network namespace can exchange
// messages with userspace peers in that namespace, receives no kernel
// messages, and every send to the kernel fails with an error matching
// ErrNotInitialNetNS. [Config.NetNS] opens the socket in a given namespace. Ids
// in kernel messages (pids, uids) are always initial-namespace values.
//
// # Handlers by callback id, and request/reply
//
// A Mux is the userspace side of the connector's founding idea: a handler
// per callback id. Mux.Serve reads a Conn with a Reader and calls, inline
// and in socket order, the handler registered for each message's exact id,
// else the one for its index, else the NotFound handler:
//
//	func NewMux() *Mux
//	func (mx *Mux) Handle(id CBID, h Handler) *Route
//	func (mx *Mux) HandleFunc(id CBID, f func(Request)) *Route
//	func (mx *Mux) HandleIndex(idx uint32, h Handler) *Route
//	func (mx *Mux) NotFound(h Handler)
//	func (r *Route) Remove()
//	func (mx *Mux) Serve(ctx context.Context, c *Conn, opts *ServeOptions) error
//	func (mx *Mux) ServeConnector(req Request) // a Mux is a Handler
//	func NewQueue(h Handler, depth int, onError func(error)) (*Queue, error)
//
// A handler gets a Request (the Message, its Sender, Reply); its Data is
// valid only during the call. Serve recovers handler panics and survives
// overruns and bad datagrams, reporting them through ServeOptions.OnError;
// it returns when its context ends or the Conn is closed. A Queue runs a
// slow handler on its own goroutine behind a bounded queue that counts what
// it drops, so that the reader never stalls.
//
// Call and Exchange send a request and wait for its reply or replies,
// matched by a Match, because each agent correlates differently
// (MatchGenealogy, MatchSeqAck, MatchAckPlusOne, MatchSeq, or your own):
//
//	func Call(ctx context.Context, c *Conn, req Message, to Destination, match Match, opts ...CallOption) (Message, Sender, error)
//	func Exchange(ctx context.Context, c *Conn, req Message, to Destination, match Match, fn func(Message, Sender) bool, opts ...CallOption) error
//	func WithUnmatched(h Handler) CallOption
//
// They work with or without a Serve on the same Conn: under Serve, replies
// are taken out before routing; without one, a waiting call reads the Conn
// itself, and hands what no call claims to the WithUnmatched handler (a
// Mux is a Handler: give it the Mux whose routes should get it), or counts
// it in [Stats].Unclaimed. ServeOptions.OnStart tells when a Serve started
// on another goroutine has taken over reading. A call from the goroutine
// that reads the same Conn (a handler) fails at once with ErrCallInHandler
// instead of deadlocking. A request to
// the kernel for an id no agent registered fails at once with ErrNoAgent;
// Agents and [Conn.Agents] list the registered agents (/proc/net/connector,
// or a cntest fake's handlers):
//
//	func Agents() ([]Agent, error)
//	func (c *Conn) Agents() ([]Agent, error)
//
// # Concurrency
//
// A [Conn] is safe for concurrent use: any number of goroutines may send
// while others receive, and Close and Flush may be called from any
// goroutine, which unblock a blocked Receive or [Reader.Next] promptly. Every
// call after Close returns an error matching [ErrClosed]; what a Reader had
// received and not yet returned is then counted in [Stats].Unread (Flush
// first to read it instead). A Reader is not safe for concurrent use; use
// one Reader per goroutine. Stats may be read at any time.
//
// # Errors
//
// Every error of a method of a Conn or a Reader, and of Dial, is an
// [*OpError] naming the operation, whose text starts with the one
// "connector:" prefix. Functions that are not methods return their cause
// without it: [GroupMask] an error wrapping [ErrInvalidGroup],
// [Message.UnmarshalBinary] and [ParseMessages] a [*MessageError] (which
// matches [ErrMalformed]), [Message.AppendBinary] one wrapping
// [ErrMessageTooLarge]. Test conditions with errors.Is: [ErrClosed] (also
// matched by os.ErrClosed and net.ErrClosed), [ErrFlushed], [ErrOverrun],
// [ErrTruncated], [ErrMalformed], [ErrNotInitialNetNS], [ErrNoConnector],
// [ErrNotSupported], [ErrMessageTooLarge], [ErrInvalidGroup],
// [ErrInvalidDestination], [ErrInvalidConfig], os.ErrInvalid (a nil or
// zero-value *Conn), os.ErrPermission and
// os.ErrDeadlineExceeded. Where the kernel gave an errno, the syscall.Errno
// is in the chain too, so both the kind and the errno match.
//
// Nil arguments: an entry point that returns an error returns one that
// names what is nil, in an [*OpError], and never panics: a nil
// context.Context, Conn, Match or reply function of Call and Exchange, a
// nil context.Context, Conn or *Mux of [Mux.Serve] (a zero Mux serves, with
// no routes), a nil handler of [NewQueue], a [Request] that has no Conn
// ([Request.Reply]). A nil or zero-value *Conn (one that Dial did not open)
// is not open: every method of it that returns an error returns one matching
// os.ErrInvalid that says so, [Conn.PortID], [Conn.Config] and [Conn.Stats]
// return zero values, and a Reader from its [Conn.NewReader] fails on Next
// the same way. Those that
// return none and register a handler ([Mux.Handle], [Mux.HandleFunc],
// [Mux.HandleIndex]) panic at once with a message that says what is wrong,
// as net/http.ServeMux does: it is a programming error, better found at
// start-up than when the first message arrives. Packages proc, w1 and their
// fakes (proctest, w1test) follow the same rule.
//
// On systems other than Linux the package compiles, and Dial returns an error
// matching ErrNotSupported.
package connector
