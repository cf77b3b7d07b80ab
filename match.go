package connector

// A Match reports whether reply, received from from, answers req. Each
// agent has its own convention, so Call and [Exchange] take the matcher as a
// parameter; the package provides the common ones ([MatchGenealogy],
// [MatchSeqAck], [MatchAckPlusOne], [MatchSeq]), and a protocol package writes its own for
// anything else, such as a sequence number inside the payload.
//
// Call and [Exchange] check the sender before they ask the Match: a reply to
// a request sent to the kernel must come from the kernel (port 0), and one to
// a port from that port. A Match runs on the goroutine that reads the Conn,
// possibly with a lock held: it must be fast, must not block and must not
// call into this package. reply.Data is valid only during the call.
type Match func(req, reply Message, from Sender) bool

var (
	// [MatchGenealogy] is the convention that
	// Documentation/driver-api/connector.rst describes: the requester
	// picks a locally unique seq and a random ack, and the reply repeats
	// the request's id and seq and carries ack + 1.
	MatchGenealogy Match = func(req, reply Message, _ Sender) bool {
		return reply.ID == req.ID && reply.Seq == req.Seq && reply.Ack == req.Ack+1
	}

	// [MatchSeqAck] matches a reply with the request's id and seq and
	// ack = seq + 1: w1 answers LIST_MASTERS and sends the data records of
	// its commands this way (drivers/w1/w1_netlink.c).
	MatchSeqAck Match = func(req, reply Message, _ Sender) bool {
		return reply.ID == req.ID && reply.Seq == req.Seq && reply.Ack == req.Seq+1
	}

	// [MatchAckPlusOne] matches a reply with the request's id and
	// ack = request ack + 1, whatever its seq: the form of the process
	// events connector's acknowledgement (drivers/connector/cn_proc.c,
	// cn_proc_ack), multicast on group 1 with a per-CPU event counter as
	// seq. Which requests a socket sees acknowledged depends on the kernel:
	//
	//   - every version sends none when the listener count is below 1
	//     after the request (the IGNORE that ends the last subscription),
	//     for a sender outside the initial user or PID namespace, or for a
	//     malformed request;
	//   - before Linux 6.6 every other LISTEN and IGNORE is acknowledged,
	//     to every group-1 member;
	//   - from Linux 6.6 each socket's filter (cn_filter) decides who gets
	//     an acknowledgement (an event with what = PROC_EVENT_NONE): a
	//     socket whose last request was an IGNORE gets none, not even its
	//     own IGNORE's, and one subscribed with fewer than every event kind
	//     gets none either, its own LISTEN's included (the kernel stores
	//     the request's filter before it acknowledges). Only a LISTEN for
	//     every kind (PROC_EVENT_ALL, which the 4-byte classic request and
	//     a filter of 0 also mean) is seen acknowledged by its sender.
	//
	// Pick a random, non-zero ack per request so that concurrent
	// requesters cannot take each other's replies.
	MatchAckPlusOne Match = func(req, reply Message, _ Sender) bool {
		return reply.ID == req.ID && reply.Ack == req.Ack+1
	}

	// [MatchSeq] matches every reply with the request's id and seq, whatever
	// its ack. w1 answers a command with data records (ack = seq + 1) and
	// then one status record per command carrying the request's own ack;
	// use it with [Exchange], counting status records to know when the
	// exchange is complete.
	MatchSeq Match = func(req, reply Message, _ Sender) bool {
		return reply.ID == req.ID && reply.Seq == req.Seq
	}
)
