package connector

import (
	"encoding/binary"
	"fmt"
)

// The netlink framing around connector messages (include/uapi/linux/netlink.h).
const (
	// nlmsgHeaderLen is sizeof(struct nlmsghdr).
	nlmsgHeaderLen = 16
	// nlmsgDone is NLMSG_DONE: the connector sends every message with this
	// type and flags 0. It is not the end of a multipart stream.
	nlmsgDone = 3
)

// A datagram walks the netlink messages of one datagram and the cn_msg
// records packed in each netlink message's payload.
type datagram struct {
	rest []byte // netlink bytes after the current netlink message
	cur  []byte // cn_msg bytes left in the current netlink message
	// fresh is set until the first netlink message has been taken: a
	// datagram must hold at least one, and alignment padding may only
	// follow one. The zero datagram is exhausted, not fresh.
	fresh bool
}

func (d *datagram) reset(b []byte) { d.rest, d.cur, d.fresh = b, nil, true }

// more reports whether bytes are left to walk (or an empty datagram to
// report).
func (d *datagram) more() bool { return len(d.cur) > 0 || len(d.rest) > 0 || d.fresh }

// next decodes the next cn_msg into m and returns true, false when the
// datagram is exhausted, or an error, after which the rest of the datagram
// is abandoned. Filling m in place keeps the fast path free of large
// return values.
func (d *datagram) next(m *Message) (bool, error) {
	for {
		// The fast path: a whole cn_msg at the start of the current netlink
		// message, with len within MaxMessageSize and within the bytes left
		// (the checks of decode, which reports what is wrong otherwise).
		if c := d.cur; len(c) >= HeaderLen {
			if end := HeaderLen + int(binary.NativeEndian.Uint16(c[16:18])); end <= HeaderLen+MaxMessageSize && end <= len(c) {
				m.fill((*[HeaderLen]byte)(c), c[HeaderLen:end:end])
				d.cur = c[end:]
				return true, nil
			}
		}
		if len(d.cur) > 0 {
			if len(d.cur) < HeaderLen && isPadding(d.cur) {
				d.cur = nil
				continue
			}
			n, err := m.decode(d.cur)
			if err != nil {
				d.cur, d.rest = nil, nil
				return false, err
			}
			d.cur = d.cur[n:]
			return true, nil
		}
		// The fast path of a netlink message: its header, nlmsg_len within
		// the bytes that arrived, and a whole first cn_msg within it, read
		// at fixed offsets after one length check. Anything else takes the
		// checks below, which say what is wrong.
		if r := d.rest; len(r) >= nlmsgHeaderLen+HeaderLen {
			h := (*[nlmsgHeaderLen + HeaderLen]byte)(r)
			l32 := binary.NativeEndian.Uint32(h[0:4])
			if l32 >= nlmsgHeaderLen+HeaderLen && uint64(l32) <= uint64(len(r)) {
				l := int(l32)
				end := nlmsgHeaderLen + HeaderLen + int(binary.NativeEndian.Uint16(h[nlmsgHeaderLen+16:nlmsgHeaderLen+18]))
				if end <= l && end <= nlmsgHeaderLen+HeaderLen+MaxMessageSize {
					m.fill((*[HeaderLen]byte)(h[nlmsgHeaderLen:]), r[nlmsgHeaderLen+HeaderLen:end:end])
					d.cur = r[end:l:l]
					d.rest = r[min(nlmsgAlign(l), len(r)):]
					d.fresh = false
					return true, nil
				}
			}
		}
		if len(d.rest) == 0 {
			if d.fresh {
				d.fresh = false
				return false, &MessageError{Reason: "the datagram is empty: it holds no netlink message"}
			}
			return false, nil
		}
		if len(d.rest) < nlmsgHeaderLen {
			if !d.fresh && isPadding(d.rest) {
				d.rest = nil
				continue
			}
			n := len(d.rest)
			d.rest, d.fresh = nil, false
			return false, &MessageError{Reason: fmt.Sprintf("%d bytes are too short for the %d-byte netlink header", n, nlmsgHeaderLen)}
		}
		d.fresh = false
		// nlmsg_len is compared as a uint32: converted to int it would be
		// negative on 32-bit systems for lengths of 2 GiB and more.
		l32 := binary.NativeEndian.Uint32(d.rest[0:4])
		switch {
		case l32 < nlmsgHeaderLen+HeaderLen:
			d.rest = nil
			return false, &MessageError{Reason: fmt.Sprintf("netlink length %d leaves no room for the %d-byte cn_msg header", l32, HeaderLen)}
		case uint64(l32) > uint64(len(d.rest)):
			n := len(d.rest)
			d.rest = nil
			return false, &MessageError{Reason: fmt.Sprintf("netlink length %d is larger than the %d bytes that arrived", l32, n)}
		}
		l := int(l32)
		d.cur = d.rest[nlmsgHeaderLen:l:l]
		d.rest = d.rest[min(nlmsgAlign(l), len(d.rest)):]
	}
}

// isPadding reports whether b is netlink alignment padding: fewer than four
// zero bytes.
func isPadding(b []byte) bool {
	if len(b) >= 4 {
		return false
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// nlmsgAlign rounds n up to the netlink alignment of 4 bytes (NLMSG_ALIGN).
func nlmsgAlign(n int) int { return (n + 3) &^ 3 }

// appendNetlink appends a netlink header and m to b: type NLMSG_DONE, flags 0,
// nlmsg_seq = m.Seq and nlmsg_pid = port, as the kernel and its samples do.
// nlmsg_len is not padded; the kernel only requires the datagram to hold it.
// It fails, as AppendBinary does, if the payload exceeds MaxMessageSize; b
// is then returned with the netlink header appended.
func appendNetlink(b []byte, m Message, port uint32) ([]byte, error) {
	b = binary.NativeEndian.AppendUint32(b, uint32(nlmsgHeaderLen+m.Len()))
	b = binary.NativeEndian.AppendUint16(b, nlmsgDone)
	b = binary.NativeEndian.AppendUint16(b, 0)
	b = binary.NativeEndian.AppendUint32(b, m.Seq)
	b = binary.NativeEndian.AppendUint32(b, port)
	return m.AppendBinary(b)
}

// ParseDatagram decodes the connector messages of one datagram as a
// NETLINK_CONNECTOR socket delivers it: one or more netlink messages
// (struct nlmsghdr, include/uapi/linux/netlink.h), each 4-byte aligned and
// holding one or more cn_msg records (struct cn_msg,
// include/uapi/linux/connector.h). It applies the checks a [Reader]
// applies to every datagram it receives: at least one netlink message,
// nlmsg_len within the bytes that arrived and large enough for a cn_msg
// header, each record's len within its netlink message and at most
// [MaxMessageSize], and nothing after the last message but alignment
// padding. The netlink message type and flags are not checked (the
// connector sends NLMSG_DONE with flags 0, which does not end anything).
//
// It is for programs that receive datagrams themselves (a raw recvfrom on
// a descriptor from [Conn.SyscallConn], a capture); check the sender of
// such a datagram with [SenderFromAddr] and a [SenderPolicy]. The messages
// alias b. On a malformed datagram it returns the messages decoded before
// the fault with an error matching ErrMalformed (a *[MessageError] saying
// what was wrong). It allocates the slice it returns; [DatagramParser]
// walks the same messages without allocating.
func ParseDatagram(b []byte) ([]Message, error) {
	var p DatagramParser
	p.Reset(b)
	var msgs []Message
	for {
		m, ok, err := p.Next()
		if !ok {
			return msgs, err
		}
		msgs = append(msgs, m)
	}
}

// A DatagramParser walks the connector messages of one datagram, in place
// and without allocating, with the checks of [ParseDatagram]: what a
// [Reader] does with each datagram it receives, for programs that receive
// datagrams themselves. The zero value holds no datagram. A DatagramParser
// is not safe for concurrent use; reuse one for every datagram.
type DatagramParser struct {
	d datagram
}

// Reset makes p walk the datagram b, from its first message. p keeps b
// until the next Reset; messages returned by Next alias it.
func (p *DatagramParser) Reset(b []byte) { p.d.reset(b) }

// Next returns the next message of the datagram and true. At the end of
// the datagram it returns false and a nil error; on a malformed datagram,
// false and an error matching ErrMalformed (a *[MessageError]), after which
// the rest of the datagram is abandoned and Next returns false, nil. An
// empty datagram is malformed: the kernel never sends one.
func (p *DatagramParser) Next() (Message, bool, error) {
	var m Message
	ok, err := p.d.next(&m)
	if err != nil {
		return Message{}, false, err
	}
	return m, ok, nil
}

// SenderFromAddr returns the sender of a datagram whose source address
// (struct sockaddr_nl, include/uapi/linux/netlink.h, as recvfrom or
// recvmmsg report it) has nl_pid port and nl_groups groups: Port is port
// (0 for the kernel), Group the group of a multicast (the kernel sets one
// bit, group g as bit g-1; the lowest bit set is taken), 0 for a unicast.
// [Reader] reports the same Sender for the same address, so that
// [SenderPolicy.Accepts] checks such a datagram as a Conn would.
func SenderFromAddr(port, groups uint32) Sender {
	return Sender{Port: port, Group: groupFromMask(groups)}
}
