// Package w1 speaks the kernel's 1-Wire (w1) protocol over the netlink
// connector: it lists bus masters, searches their buses, registers and
// removes slaves, and runs reset/write/read/touch transactions, on any
// kernel with CONFIG_W1_CON (Debian and most distributions: wire.ko).
//
// # Protocol
//
// The w1 agent has callback id 3:1 ([ID]). A request is one cn_msg whose
// payload holds one or more w1_netlink_msg ([Msg]), each with a type, an
// 8-byte id (a master number or a slave's ROM code) and, for MASTER_CMD and
// SLAVE_CMD, one or more w1_netlink_cmd ([Cmd]). The layout is defined in
// drivers/w1/w1_netlink.h, which is not a uapi header; it is identical in
// Linux 6.1, 6.12 and 7.3 and unchanged since the 2014 rework (3.16).
// [ParseMsgs] and [AppendMsg] decode and encode it with every length checked.
//
// Replies are unicast to the requesting socket and follow these rules,
// verified on Linux 6.1, 6.12, 6.18 and 7.3:
//
//   - data records (the bytes of a READ or TOUCH, the ids of a SEARCH,
//     ALARM_SEARCH or LIST_SLAVES, the masters of LIST_MASTERS) carry
//     seq = the request's seq and ack = seq+1;
//   - every command then gets one status record with seq = the request's
//     seq and ack = the request's own ack, whose status byte is 0 or a
//     positive errno (255 for a RESET without a presence pulse);
//   - a message-level error (unknown master or slave, no commands, unknown
//     type, unknown cn_msg flags) is one status record without a command;
//   - there is no end marker: a request is complete when every command has
//     its status. A request's ack must therefore differ from seq+1; Conn
//     picks a random one;
//   - with [FlagBundle] (W1_CN_BUNDLE) the records of one request come packed
//     in as few datagrams as the kernel can manage, several cn_msg in one
//     netlink message and several w1_netlink_msg in one cn_msg;
//   - without it, the reply to a lone RESET, READ or TOUCH (any message whose
//     first reply record fills the kernel's reply block) is preceded by an
//     empty record with callback id 0:0 ([IsStray]), and a lone READ of 0
//     bytes also gets an empty w1 record (ack = seq+1, no message) after its
//     data; both carry nothing and are skipped. Measured on 6.1, 6.12, 6.18
//     and 7.3 (TestIntegrationReplyShape), where package w1test reproduces
//     them byte for byte.
//
// Notifications (a master or slave added or removed) are multicast on group
// 3 ([Group]) with a sequence number per bus master.
//
// # Client
//
// [Conn] ([Dial], or [NewConn] on any [connector.Conn], including one of a
// cntest fake kernel with the fake agent of package w1test) sends each request as
// one cn_msg with a fresh seq and a random ack that is neither 0 nor seq+1,
// and collects its records through [connector.Exchange] until every command
// has its status. The Conn's socket is read all the time by a [connector.Mux]
// on a goroutine of its own: a w1 reply that does not fit in the socket's
// buffer blocks the bus master's kernel thread, and with it every user of
// that bus (and, for LIST_MASTERS, the sender's own send), so a client must
// never stop reading (the kernel matrix shows the stall on every kernel:
// TestIntegrationStallWithoutReader). Requests fail at once with an error matching
// [connector.ErrNoAgent] when the w1 agent is not registered (the kernel would
// drop them without a word), and after [Config].Timeout ([DefaultTimeout])
// with [ErrNoReply] if a reply never completes.
//
// The kernel sends LIST_MASTERS replies in the sender's own system call, in
// page-sized records and without an end marker; [Conn.Masters] therefore appends an
// empty MASTER_CMD to its request, whose EPROTO status follows the last page
// and ends the reply.
//
// Errors have one "w1: op: detail" shape ("w1: list masters: ..."); errors
// of package connector underneath keep matching with errors.Is and
// errors.As. A nil Conn for NewConn is an error; a nil function for
// EventHandler, and a nil kernel for w1test.New, panic at once with a
// message that says so (as connector.Mux.Handle does).
//
// # Transactions and the bus lock
//
// The kernel holds a bus master's lock for all the commands of one
// w1_netlink_msg and releases it between messages. A reset, a ROM command and
// the reads and writes that belong to it must therefore be one transaction
// ([Conn.Master] or [Conn.Slave], then [Tx.Reset], [Tx.Write], [Tx.Read],
// [Tx.Touch], [Tx.Do]): as
// separate requests, the kernel's automatic search (every 10 s by default)
// or another client can come in between. A slave transaction starts with the
// kernel's own reset and selection of the slave. Each command gets its own
// status: Do returns an [*Error] with the command's index and errno, and the
// kernel runs the following commands anyway, except after a failed slave
// selection (ENODEV) or a malformed command (E2BIG).
//
// # Notifications
//
// [Watch] yields notifications from group 3; [EventHandler] decodes them on
// a [connector.Mux] route. Slave notifications do not say which master the
// slave is on. Where group 3 cannot be joined (Linux before 6.6 without
// CAP_NET_ADMIN: Watch's error matches [os.ErrPermission]), [Conn.Poll] lists
// masters and slaves at an interval and yields the differences; it needs no
// privilege and costs no bus traffic.
//
// # Privileges
//
// The kernel checks no privilege on any w1 request: every local user can
// reset, write to and read from every 1-Wire bus through netlink (rewrite an
// EEPROM, say), attach slaves and start searches, even where sysfs allows
// writes only to root. Joining group 3 for notifications needs CAP_NET_ADMIN
// before Linux 6.6; from 6.6 on anyone may join it, through a quirk of the
// connector's bind check that a future kernel may fix.
//
// # Missing features of the kernel interface
//
// Netlink offers no strong pull-up (the kernel's w1_next_pullup is not
// reachable from it), so a parasite-powered DS18B20 cannot be made to
// convert a temperature over netlink; power such sensors externally, or use
// the kernel's w1_therm driver through sysfs.
package w1
