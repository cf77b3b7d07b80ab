package cntest

import (
	"encoding/binary"
	"fmt"

	"github.com/cnlink/connector"
)

// Wire layout, defined here independently of package connector so that the
// fake checks the connector's encoder and decoder instead of trusting them.
// Sources: include/uapi/linux/netlink.h (struct nlmsghdr, NLMSG_DONE,
// NLMSG_ALIGNTO, since Linux 2.2) and include/uapi/linux/connector.h (struct
// cn_msg and CONNECTOR_MAX_MSG_SIZE, since Linux 2.6.14).
const (
	// NetlinkHeaderLen is sizeof(struct nlmsghdr).
	NetlinkHeaderLen = 16
	// MessageHeaderLen is sizeof(struct cn_msg) without its data.
	MessageHeaderLen = 20
	// TypeDone is NLMSG_DONE, the netlink type of every message the
	// kernel's connector sends. It does not end a multipart stream.
	TypeDone = 3

	// maxKernelInput is CONNECTOR_MAX_MSG_SIZE: the kernel drops a message
	// whose netlink payload (cn_msg header plus data) is larger.
	maxKernelInput = 16384
	// maxLen is the largest payload a cn_msg's 16-bit len can describe.
	maxLen = 0xffff
)

// A NetlinkHeader is a struct nlmsghdr as it appears on the wire.
type NetlinkHeader struct {
	// Len is nlmsg_len: the header plus payload, without alignment padding.
	Len uint32
	// Type is nlmsg_type; the kernel's connector always sends TypeDone.
	Type uint16
	// Flags is nlmsg_flags; the kernel's connector always sends 0.
	Flags uint16
	// Seq is nlmsg_seq; the kernel copies the cn_msg's seq into it.
	Seq uint32
	// PID is nlmsg_pid; the kernel sends 0. Userspace senders write what
	// they like here, so it proves nothing about who sent a message.
	PID uint32
}

// AppendNetlink appends one netlink message with header h and the given
// payload to b, zero-padded to a 4-byte boundary as the kernel pads it. If
// h.Len is 0 it is set to the unpadded length, 16 + len(payload); any other
// value is written as given, so that tests can build netlink headers that
// lie about their length.
func AppendNetlink(b []byte, h NetlinkHeader, payload []byte) []byte {
	if h.Len == 0 {
		h.Len = uint32(NetlinkHeaderLen + len(payload))
	}
	b = binary.NativeEndian.AppendUint32(b, h.Len)
	b = binary.NativeEndian.AppendUint16(b, h.Type)
	b = binary.NativeEndian.AppendUint16(b, h.Flags)
	b = binary.NativeEndian.AppendUint32(b, h.Seq)
	b = binary.NativeEndian.AppendUint32(b, h.PID)
	b = append(b, payload...)
	for n := NetlinkHeaderLen + len(payload); n%4 != 0; n++ {
		b = append(b, 0)
	}
	return b
}

// AppendMessage appends m as a cn_msg record (header and data, no padding)
// to b. It fails if m.Data is longer than the 65535 bytes that the header's
// 16-bit len can describe. Unlike connector.Message.AppendBinary it does not
// enforce CONNECTOR_MAX_MSG_SIZE, so that tests can build messages the
// connector must reject. It repeats connector's encoder on purpose: the
// fake's bytes come from code of its own, so that a bug in one encoder shows
// up against the other.
func AppendMessage(b []byte, m connector.Message) ([]byte, error) {
	if len(m.Data) > maxLen {
		return b, fmt.Errorf("cntest: payload of %d bytes does not fit the 16-bit len of a cn_msg (at most %d)", len(m.Data), maxLen)
	}
	b = binary.NativeEndian.AppendUint32(b, m.ID.Idx)
	b = binary.NativeEndian.AppendUint32(b, m.ID.Val)
	b = binary.NativeEndian.AppendUint32(b, m.Seq)
	b = binary.NativeEndian.AppendUint32(b, m.Ack)
	b = binary.NativeEndian.AppendUint16(b, uint16(len(m.Data)))
	b = binary.NativeEndian.AppendUint16(b, m.Flags)
	return append(b, m.Data...), nil
}

// appendKernel appends the datagram the kernel builds for msgs packed into one
// netlink message (cn_netlink_send_mult in drivers/connector/connector.c):
// nlmsghdr{len, NLMSG_DONE, flags 0, seq of the first message, pid 0}.
func appendKernel(b []byte, msgs ...connector.Message) ([]byte, error) {
	start := len(b)
	b = append(b, make([]byte, NetlinkHeaderLen)...)
	for _, m := range msgs {
		var err error
		if b, err = AppendMessage(b, m); err != nil {
			return b[:start], err
		}
	}
	n := len(b) - start
	var seq uint32
	if len(msgs) > 0 {
		seq = msgs[0].Seq
	}
	h := b[start:]
	binary.NativeEndian.PutUint32(h[0:4], uint32(n))
	binary.NativeEndian.PutUint16(h[4:6], TypeDone)
	binary.NativeEndian.PutUint16(h[6:8], 0)
	binary.NativeEndian.PutUint32(h[8:12], seq)
	binary.NativeEndian.PutUint32(h[12:16], 0)
	for ; n%4 != 0; n++ {
		b = append(b, 0)
	}
	return b, nil
}

// Datagram returns the exact bytes of the datagram in which the kernel sends
// m: a netlink header (nlmsg_len = 36 + len(m.Data), unpadded; type
// NLMSG_DONE; flags 0; nlmsg_seq = m.Seq; nlmsg_pid 0), m's cn_msg header and
// data, and zero padding to a 4-byte boundary. Datagrams can be concatenated
// to build a datagram holding several netlink messages.
//
// Offsets in the result: the cn_msg header starts at 16 (its len field at 32)
// and the data at 36. Overwrite fields there to build malformed input.
//
// It fails if m.Data is longer than 65535 bytes.
func Datagram(m connector.Message) ([]byte, error) {
	return appendKernel(nil, m)
}

// Bundle returns one netlink message whose payload packs several cn_msg
// records back to back with no alignment between them, as w1 sends bundled
// replies (W1_CN_BUNDLE): the netlink header carries the first message's seq.
// With no messages it returns a netlink message with an empty payload, which
// receivers must reject.
func Bundle(msgs ...connector.Message) ([]byte, error) {
	return appendKernel(nil, msgs...)
}

// MustDatagram is like Datagram but panics on error. It is meant for tests
// with constant input.
func MustDatagram(m connector.Message) []byte {
	b, err := Datagram(m)
	if err != nil {
		panic(err)
	}
	return b
}

// parseHeader reads a netlink header from b, which must hold 16 bytes.
func parseHeader(b []byte) NetlinkHeader {
	return NetlinkHeader{
		Len:   binary.NativeEndian.Uint32(b[0:4]),
		Type:  binary.NativeEndian.Uint16(b[4:6]),
		Flags: binary.NativeEndian.Uint16(b[6:8]),
		Seq:   binary.NativeEndian.Uint32(b[8:12]),
		PID:   binary.NativeEndian.Uint32(b[12:16]),
	}
}

// parseInput decodes a datagram sent to the kernel (port 0) the way the
// connector core does (cn_rx_skb and cn_call_callback in
// drivers/connector/connector.c): only the first netlink message and the
// first cn_msg in it count; everything after them is ignored. It returns a
// reason when the kernel would drop the datagram. The message's Data is a
// copy.
func parseInput(p []byte) (NetlinkHeader, connector.Message, string) {
	var m connector.Message
	if len(p) < NetlinkHeaderLen {
		return NetlinkHeader{}, m, fmt.Sprintf("datagram of %d bytes is shorter than the %d-byte netlink header", len(p), NetlinkHeaderLen)
	}
	h := parseHeader(p)
	switch {
	case h.Len < NetlinkHeaderLen+MessageHeaderLen:
		return h, m, fmt.Sprintf("nlmsg_len %d leaves no room for the %d-byte cn_msg header", h.Len, MessageHeaderLen)
	case int64(h.Len) > int64(len(p)):
		return h, m, fmt.Sprintf("nlmsg_len %d is larger than the %d-byte datagram", h.Len, len(p))
	case h.Len-NetlinkHeaderLen > maxKernelInput:
		return h, m, fmt.Sprintf("netlink payload of %d bytes exceeds CONNECTOR_MAX_MSG_SIZE (%d)", h.Len-NetlinkHeaderLen, maxKernelInput)
	}
	cn := p[NetlinkHeaderLen:h.Len]
	l := int(binary.NativeEndian.Uint16(cn[16:18]))
	if MessageHeaderLen+l > len(cn) {
		return h, m, fmt.Sprintf("cn_msg len %d does not fit in the %d bytes after the cn_msg header", l, len(cn)-MessageHeaderLen)
	}
	m.ID.Idx = binary.NativeEndian.Uint32(cn[0:4])
	m.ID.Val = binary.NativeEndian.Uint32(cn[4:8])
	m.Seq = binary.NativeEndian.Uint32(cn[8:12])
	m.Ack = binary.NativeEndian.Uint32(cn[12:16])
	m.Flags = binary.NativeEndian.Uint16(cn[18:20])
	m.Data = append([]byte{}, cn[MessageHeaderLen:MessageHeaderLen+l]...)
	return h, m, ""
}
