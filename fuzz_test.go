package connector_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
)

// Native fuzz targets for every decoder of the package. The seed corpus in
// testdata/fuzz holds bytes captured from a real kernel (see its README);
// the f.Add seeds below add the shapes the kernel does not send by itself.
// Each target checks its decoder against a small reference decoder written
// from the wire format (struct nlmsghdr, struct cn_msg), so that a change
// in what is accepted shows up, and checks that errors match ErrMalformed.

// refMessage decodes one cn_msg record the way the format defines it:
// 20-byte header, len at offset 16, len at most CONNECTOR_MAX_MSG_SIZE,
// len bytes of data. It returns the record's size or an error.
func refMessage(b []byte) (connector.Message, int, error) {
	if len(b) < 20 {
		return connector.Message{}, 0, errors.New("short header")
	}
	ne := binary.NativeEndian
	l := int(ne.Uint16(b[16:]))
	if l > 16384 || 20+l > len(b) {
		return connector.Message{}, 0, errors.New("bad len")
	}
	return connector.Message{
		ID:    connector.CBID{Idx: ne.Uint32(b[0:]), Val: ne.Uint32(b[4:])},
		Seq:   ne.Uint32(b[8:]),
		Ack:   ne.Uint32(b[12:]),
		Flags: ne.Uint16(b[18:]),
		Data:  b[20 : 20+l],
	}, 20 + l, nil
}

// padding reports whether b is netlink alignment padding: one to three zero
// bytes.
func padding(b []byte) bool {
	return len(b) > 0 && len(b) < 4 && bytes.Count(b, []byte{0}) == len(b)
}

// refRecords decodes cn_msg records packed back to back, allowing trailing
// padding.
func refRecords(b []byte) ([]connector.Message, error) {
	var msgs []connector.Message
	for len(b) > 0 && !padding(b) {
		m, n, err := refMessage(b)
		if err != nil {
			return msgs, err
		}
		msgs = append(msgs, m)
		b = b[n:]
	}
	return msgs, nil
}

// refDatagram decodes a datagram of netlink messages, each holding cn_msg
// records: at least one netlink message; nlmsg_len from 36 to what is left;
// the next message at the 4-byte aligned offset; padding only after a
// message.
func refDatagram(b []byte) ([]connector.Message, error) {
	if len(b) == 0 {
		return nil, errors.New("empty")
	}
	var msgs []connector.Message
	first := true
	for len(b) > 0 && (first || !padding(b)) {
		first = false
		if len(b) < 16 {
			return msgs, errors.New("short netlink header")
		}
		l := binary.NativeEndian.Uint32(b)
		if l < 36 || uint64(l) > uint64(len(b)) {
			return msgs, errors.New("bad nlmsg_len")
		}
		ms, err := refRecords(b[16:l])
		msgs = append(msgs, ms...)
		if err != nil {
			return msgs, err
		}
		b = b[min((int(l)+3)&^3, len(b)):]
	}
	return msgs, nil
}

func sameMessages(a, b []connector.Message) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d messages, want %d", len(a), len(b))
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.ID != y.ID || x.Seq != y.Seq || x.Ack != y.Ack || x.Flags != y.Flags || !bytes.Equal(x.Data, y.Data) {
			return fmt.Errorf("message %d = %+v, want %+v", i, x, y)
		}
	}
	return nil
}

func checkMalformed(t *testing.T, err error) {
	t.Helper()
	var me *connector.MessageError
	if !errors.Is(err, connector.ErrMalformed) || !errors.As(err, &me) || me.Reason == "" {
		t.Fatalf("error %v is not a *MessageError with a reason matching ErrMalformed", err)
	}
}

func addShapes(f *testing.F, add func(b []byte)) {
	ev := connector.Message{ID: connector.IDProc, Seq: 1, Data: make([]byte, 40)}
	w := connector.Message{ID: connector.IDW1, Seq: 2, Ack: 3, Flags: 1, Data: []byte("odd")}
	d := cntest.MustDatagram(ev)
	bundle, _ := cntest.Bundle(w, w, connector.Message{ID: connector.IDW1})
	add(nil)
	add(d)
	add(bundle)
	add(append(cntest.MustDatagram(w), bundle...))
	add(d[:35])
	lying := append([]byte(nil), d...)
	binary.NativeEndian.PutUint16(lying[32:], 41)
	add(lying)
	big := cntest.MustDatagram(connector.Message{Data: make([]byte, 16385)})
	add(big[:64])
}

func FuzzUnmarshalMessage(f *testing.F) {
	addShapes(f, func(b []byte) {
		if len(b) >= 16 {
			f.Add(b[16:])
		}
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		var m connector.Message
		err := m.UnmarshalBinary(data)
		want, n, werr := refMessage(data)
		if (err == nil) != (werr == nil) {
			t.Fatalf("UnmarshalBinary error %v, reference %v", err, werr)
		}
		if err != nil {
			checkMalformed(t, err)
			return
		}
		if err := sameMessages([]connector.Message{m}, []connector.Message{want}); err != nil {
			t.Fatal(err)
		}
		// Data aliases the input and cannot grow into what follows.
		if len(m.Data) > 0 && &m.Data[0] != &data[20] {
			t.Error("Data does not alias the input")
		}
		if cap(m.Data) != len(m.Data) {
			t.Errorf("Data has capacity %d beyond its %d bytes", cap(m.Data), len(m.Data))
		}
		// Round trip: encoding gives back the record's bytes.
		b, err := m.MarshalBinary()
		if err != nil || !bytes.Equal(b, data[:n]) || m.Len() != n {
			t.Fatalf("MarshalBinary = % x, %v; want % x", b, err, data[:n])
		}
	})
}

func FuzzParseMessages(f *testing.F) {
	addShapes(f, func(b []byte) {
		if len(b) >= 16 {
			f.Add(b[16:])
		}
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, err := connector.ParseMessages(data)
		want, werr := refRecords(data)
		if (err == nil) != (werr == nil) {
			t.Fatalf("ParseMessages error %v, reference %v", err, werr)
		}
		if err != nil {
			checkMalformed(t, err)
		}
		if err := sameMessages(msgs, want); err != nil {
			t.Fatal(err)
		}
		// Round trip: the messages re-encode to the input, up to the
		// error or the padding.
		var enc []byte
		for _, m := range msgs {
			if enc, err = m.AppendBinary(enc); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.HasPrefix(data, enc) {
			t.Fatal("the messages do not re-encode to the start of the input")
		}
		if rest := data[len(enc):]; werr == nil && len(rest) > 0 && !padding(rest) {
			t.Fatalf("ParseMessages succeeded but left % x", rest)
		}
	})
}

// FuzzReader feeds a datagram from an arbitrary sender through a Conn on the
// fake kernel and reads it with Reader.Next, followed by a known datagram
// that must always arrive. It checks the sender policy, truncation, and the
// datagram walker against the reference.
func FuzzReader(f *testing.F) {
	addShapes(f, func(b []byte) { f.Add(b, uint32(0), uint8(1)) })
	f.Add([]byte("\x00\x00"), uint32(0), uint8(0))
	f.Add(make([]byte, 600), uint32(0), uint8(20))
	const bufSize = 512
	sentinel := connector.Message{ID: connector.CBID{Idx: 0xdead, Val: 0xbeef}, Seq: 0xfeedface}
	f.Fuzz(func(t *testing.T, data []byte, port uint32, group uint8) {
		from := connector.Sender{Port: port, Group: connector.Group(group % 33)}
		k := cntest.New(nil)
		c, err := k.Dial(&connector.Config{MessageBufferSize: bufSize, BatchSize: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := k.InjectRaw(c.PortID(), from, data); err != nil {
			t.Fatal(err)
		}
		if err := k.Unicast(c.PortID(), sentinel); err != nil {
			t.Fatal(err)
		}
		if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		r := c.NewReader()
		defer r.Release()

		var got []connector.Message
		var errs []error
		for {
			m, mfrom, err := r.Next()
			if err != nil {
				if errors.Is(err, connector.ErrClosed) || errors.Is(err, connector.ErrOverrun) || len(errs) > 1 {
					t.Fatalf("Next: %v (after %v)", err, errs)
				}
				errs = append(errs, err)
				continue
			}
			if m.ID == sentinel.ID && m.Seq == sentinel.Seq && mfrom.Port == 0 && mfrom.Group == 0 {
				break
			}
			if mfrom != from {
				t.Fatalf("message from %+v, want %+v", mfrom, from)
			}
			got = append(got, owned(m))
		}
		s := c.Stats()

		switch {
		case from.Port != 0 && from.Group.Kernel():
			// A userspace port on a kernel group: dropped, counted.
			if len(got) != 0 || len(errs) != 0 || s.Foreign != 1 {
				t.Fatalf("spoofed datagram gave %d messages, errors %v, Stats %+v", len(got), errs, s)
			}
		case len(data) > bufSize:
			if len(got) != 0 || len(errs) != 1 || !errors.Is(errs[0], connector.ErrTruncated) || s.Truncated != 1 {
				t.Fatalf("%d-byte datagram into %d bytes gave %d messages, errors %v", len(data), bufSize, len(got), errs)
			}
		default:
			want, werr := refDatagram(data)
			if err := sameMessages(got, want); err != nil {
				t.Fatal(err)
			}
			if werr == nil && len(errs) != 0 {
				t.Fatalf("Reader reported %v; the reference decodes the datagram", errs)
			}
			if werr != nil {
				if len(errs) != 1 {
					t.Fatalf("Reader reported %v; the reference says %v", errs, werr)
				}
				checkMalformed(t, errs[0])
			}
			if s.Malformed != uint64(len(errs)) || s.Messages != uint64(len(got)+1) {
				t.Fatalf("Stats %+v after %d messages and %d errors", s, len(got), len(errs))
			}
		}
	})
}
