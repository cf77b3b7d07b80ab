package connector

import (
	"encoding/binary"
	"fmt"
)

const (
	// HeaderLen is the size of struct cn_msg without its data: id (8 bytes),
	// seq, ack (4 each), len and flags (2 each). The kernel checks this size at
	// build time.
	HeaderLen = 20

	// MaxMessageSize is CONNECTOR_MAX_MSG_SIZE from
	// include/uapi/linux/connector.h: the largest cn_msg payload this package
	// encodes or accepts. The kernel's input path is stricter: it drops a
	// message whose header plus payload exceeds 16384 bytes, so the largest
	// payload that [Conn.Send] delivers to a kernel agent is MaxKernelPayload.
	MaxMessageSize = 16384

	// MaxKernelPayload is the largest payload a message sent to the kernel
	// (port 0) may carry: CONNECTOR_MAX_MSG_SIZE minus the cn_msg header.
	// drivers/connector/connector.c silently drops anything larger.
	MaxKernelPayload = MaxMessageSize - HeaderLen
)

// A Message is one connector message: a struct cn_msg header and its payload.
//
// Messages returned by a Reader alias the Reader's buffer: Data is valid only
// until the next call to the Reader (see Reader). Messages returned by
// [Conn.Receive] and UnmarshalBinary alias the bytes they were decoded from.
type Message struct {
	// ID routes the message to a kernel callback, or names what it carries.
	ID CBID
	// Seq and Ack correlate requests and replies. Their meaning is the
	// agent's own: see the package documentation.
	Seq uint32
	Ack uint32
	// Flags is opaque to the connector core; only w1 interprets it.
	Flags uint16
	// Data is the payload; its length is the header's len field.
	Data []byte
}

// Len returns the encoded size of m: HeaderLen plus the payload.
func (m Message) Len() int { return HeaderLen + len(m.Data) }

// MarshalBinary encodes m as a cn_msg header followed by its payload.
func (m Message) MarshalBinary() ([]byte, error) {
	return m.AppendBinary(make([]byte, 0, m.Len()))
}

// AppendBinary appends the encoding of m to b. It allocates only if b lacks
// the capacity. It fails if the payload exceeds MaxMessageSize.
func (m Message) AppendBinary(b []byte) ([]byte, error) {
	if len(m.Data) > MaxMessageSize {
		return b, fmt.Errorf("%w: payload of %d bytes exceeds the connector's limit of %d bytes (CONNECTOR_MAX_MSG_SIZE)", ErrMessageTooLarge, len(m.Data), MaxMessageSize)
	}
	b = binary.NativeEndian.AppendUint32(b, m.ID.Idx)
	b = binary.NativeEndian.AppendUint32(b, m.ID.Val)
	b = binary.NativeEndian.AppendUint32(b, m.Seq)
	b = binary.NativeEndian.AppendUint32(b, m.Ack)
	b = binary.NativeEndian.AppendUint16(b, uint16(len(m.Data)))
	b = binary.NativeEndian.AppendUint16(b, m.Flags)
	return append(b, m.Data...), nil
}

// UnmarshalBinary decodes one cn_msg from the start of b. Data aliases b: it
// is not copied. Bytes after the message (20 + its len) are ignored; use
// ParseMessages to walk a buffer that packs several messages back to back.
//
// It fails, without panicking, if b is shorter than the 20-byte header, if the
// header's len is larger than what b holds, or if len exceeds MaxMessageSize.
func (m *Message) UnmarshalBinary(b []byte) error {
	_, err := m.decode(b)
	return err
}

// decode fills m from the start of b and returns the bytes consumed.
func (m *Message) decode(b []byte) (int, error) {
	if len(b) < HeaderLen {
		return 0, &MessageError{Reason: fmt.Sprintf("%d bytes are too short for the %d-byte cn_msg header", len(b), HeaderLen)}
	}
	l := int(binary.NativeEndian.Uint16(b[16:18]))
	if l > MaxMessageSize {
		return 0, &MessageError{Reason: fmt.Sprintf("header len %d exceeds the connector's limit of %d bytes", l, MaxMessageSize)}
	}
	if HeaderLen+l > len(b) {
		return 0, &MessageError{Reason: fmt.Sprintf("header len %d is larger than the %d payload bytes that arrived", l, len(b)-HeaderLen)}
	}
	m.fill((*[HeaderLen]byte)(b), b[HeaderLen:HeaderLen+l:HeaderLen+l])
	return HeaderLen + l, nil
}

// fill sets m from a checked cn_msg header h and its payload data: the
// header is read at fixed offsets of the array, without bounds checks.
func (m *Message) fill(h *[HeaderLen]byte, data []byte) {
	m.ID.Idx = binary.NativeEndian.Uint32(h[0:4])
	m.ID.Val = binary.NativeEndian.Uint32(h[4:8])
	m.Seq = binary.NativeEndian.Uint32(h[8:12])
	m.Ack = binary.NativeEndian.Uint32(h[12:16])
	m.Flags = binary.NativeEndian.Uint16(h[18:20])
	m.Data = data
}

// ParseMessages decodes every cn_msg packed back to back in b, as w1 does for
// bundled replies: the next header starts right after the previous payload,
// with no alignment. The messages alias b. Up to three trailing zero bytes
// (netlink alignment padding) are accepted; any other leftover is an error,
// returned together with the messages decoded before it.
func ParseMessages(b []byte) ([]Message, error) {
	var msgs []Message
	for len(b) > 0 {
		if len(b) < HeaderLen && isPadding(b) {
			break
		}
		var m Message
		n, err := m.decode(b)
		if err != nil {
			return msgs, err
		}
		msgs = append(msgs, m)
		b = b[n:]
	}
	return msgs, nil
}
