// Package dmlog implements the userspace side of dm-log-userspace: a
// device-mapper mirror's dirty log kept by a Go program instead of the
// kernel (drivers/md/dm-log-userspace-base.c and -transfer.c, connector id
// 7:1, multicast group 7).
//
// A mirror table names the userspace log type with the mirror's uuid and the
// log arguments the server interprets:
//
//	0 8192 mirror userspace 3 <uuid> core 1024 2 <leg0> 0 <leg1> 0
//
// The kernel then turns each call of its dirty log interface into a request
// multicast on group 7 (CTR, GET_REGION_SIZE, MARK_REGION, FLUSH, ...) and
// waits for a reply sent back to it (port 0). The protocol layer
// (ParseRequest, AppendReply, Request's accessors) follows
// include/uapi/linux/dm-log-userspace.h, version 3.
//
// # Deadlines and duplicates
//
// The kernel waits 15 s for each reply (DM_ULOG_RETRY_TIMEOUT). Then it
// resends the same request under a new sequence number and ignores a late
// reply to the old one. The I/O that caused the request waits meanwhile. A
// server must therefore answer fast and must treat every request as possibly
// repeated: MARK_REGION, CLEAR_REGION, FLUSH and SET_REGION_SYNC must be
// idempotent, and GET_RESYNC_WORK must hand out the same region again while
// it is being recovered. A reply with no payload whose cn_msg.ack is EAGAIN
// makes the kernel resend at once.
//
// When nobody listens on group 7 the kernel fails a table load within
// milliseconds ("Userspace log server not found"). A request for an existing
// mirror loops instead: every 2 s the kernel re-sends the constructor with
// its stored arguments until a server answers, then sends RESUME and the
// pending request. A server whose socket overran looks the same to the
// kernel (the multicast reached nobody), so a server must expect a second
// CTR for a log it already has.
//
// # Serving
//
// Server answers the requests with one Log per mirror (its uuid and luid);
// the zero value keeps MemLogs, in-memory logs with the core log's
// semantics, built from the table's log arguments ("core 1024 [nosync]").
// Server.Serve runs it on a Conn of its own through a connector.Mux; the
// Server is also a connector.Handler for a Mux that serves other agents. It
// answers inline, in socket order, and:
//
//   - echoes each request's header with the reply (the kernel matches on its
//     seq), and never sends more reply data than the kernel's buffer for
//     the type holds (Type.ReplyDataLimit): the kernel would fail the call
//     with ENOSPC;
//   - answers a request it cannot parse with a payload-less EAGAIN ack, so
//     that the kernel sends it again at once, and a request of a type it
//     does not know with EINVAL;
//   - answers a request for a log it does not have (it was restarted) with
//     ESRCH: the kernel then re-sends the constructor every 2 s until it is
//     answered, then RESUME and the request;
//   - rebuilds a log whose constructor comes again (Ctr.Again) instead of
//     failing it, as cmirrord does; a MemLog rebuilt that way, or built from
//     the kernel's re-sent constructor (Ctr.Resent), starts with every
//     region out of sync, so that writes nobody logged are resynchronised;
//   - refuses to start without CAP_SYS_ADMIN (ErrNoSysAdmin) or without the
//     dm-log-userspace agent in the kernel (connector.ErrNoAgent: the module
//     is not loaded, and no request would ever come); Server.Check makes
//     the same checks for a program that wants to say it serves only when
//     it can;
//   - raises the socket's receive buffer, and reports receive overruns
//     through ErrorLog without stopping.
//
// Package dmlogtest plays the kernel's side on a cntest fake connector, for
// unit tests of a Server and of Log implementations without device-mapper.
//
// # Privileges
//
// The kernel ignores, silently, replies from processes without
// CAP_SYS_ADMIN. Listening on group 7 needs CAP_NET_ADMIN before Linux 6.6;
// since 6.6 any process may listen (7 is odd), and so read every request.
// The requests carry the log's luid, which the kernel sets to the address of
// its log context: a kernel pointer, shown to every listener (a small KASLR
// leak). Any CAP_SYS_ADMIN process can also answer the kernel's requests in
// a server's place: the first reply with the right seq wins.
package dmlog
