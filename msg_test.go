package connector_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/google/go-cmp/cmp"
)

// cnBytes builds a cn_msg record by hand, field by field, independently of
// the code under test. l is written into the len field as given.
func cnBytes(idx, val, seq, ack uint32, l, flags uint16, data []byte) []byte {
	b := make([]byte, 20, 20+len(data))
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], idx)
	ne.PutUint32(b[4:], val)
	ne.PutUint32(b[8:], seq)
	ne.PutUint32(b[12:], ack)
	ne.PutUint16(b[16:], l)
	ne.PutUint16(b[18:], flags)
	return append(b, data...)
}

func TestMessageMarshalBinary(t *testing.T) {
	tests := []struct {
		name string
		m    connector.Message
	}{
		{"empty", connector.Message{}},
		{"proc listen", connector.Message{ID: connector.IDProc, Seq: 1, Ack: 0xdeadbeef, Data: []byte{1, 0, 0, 0}}},
		{"all fields", connector.Message{ID: connector.CBID{Idx: 0xfffffffe, Val: 0x80000001}, Seq: 0xffffffff, Ack: 7, Flags: 0xffff, Data: []byte("abc")}},
		{"largest", connector.Message{ID: connector.IDW1, Data: bytes.Repeat([]byte{0x5a}, connector.MaxMessageSize)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.m
			want := cnBytes(m.ID.Idx, m.ID.Val, m.Seq, m.Ack, uint16(len(m.Data)), m.Flags, m.Data)
			got, err := m.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("MarshalBinary =\n% x\nwant\n% x", got, want)
			}
			if m.Len() != len(want) {
				t.Errorf("Len = %d, want %d", m.Len(), len(want))
			}
			// The fake kernel's independent encoder agrees.
			if alt, err := cntest.AppendMessage(nil, m); err != nil || !bytes.Equal(alt, got) {
				t.Errorf("cntest.AppendMessage = % x, %v", alt, err)
			}
			prefix := []byte("prefix")
			app, err := m.AppendBinary(prefix)
			if err != nil || !bytes.Equal(app, append([]byte("prefix"), want...)) {
				t.Errorf("AppendBinary onto a prefix = % x, %v", app, err)
			}
			var back connector.Message
			if err := back.UnmarshalBinary(got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(m, back, cmp.Comparer(func(a, b []byte) bool { return bytes.Equal(a, b) })); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMessageMarshalTooLarge(t *testing.T) {
	m := connector.Message{Data: make([]byte, connector.MaxMessageSize+1)}
	if _, err := m.MarshalBinary(); !errors.Is(err, connector.ErrMessageTooLarge) || !strings.Contains(err.Error(), "16385") {
		t.Errorf("MarshalBinary of 16385 bytes: %v, want ErrMessageTooLarge naming the size", err)
	}
	b := []byte("keep")
	got, err := m.AppendBinary(b)
	if err == nil || string(got) != "keep" {
		t.Errorf("failed AppendBinary = %q, %v; want the input back and an error", got, err)
	}
}

func TestAppendBinaryDoesNotAllocate(t *testing.T) {
	m := connector.Message{ID: connector.IDProc, Seq: 3, Data: make([]byte, 40)}
	buf := make([]byte, 0, 128)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		buf, err = m.AppendBinary(buf[:0])
		if err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("AppendBinary into a buffer with room: %v allocations, want 0", allocs)
	}
}

func TestUnmarshalBinaryAliases(t *testing.T) {
	b := cnBytes(1, 1, 5, 6, 4, 0, []byte{1, 2, 3, 4})
	b = append(b, 0xee, 0xee) // trailing bytes are not the message's
	var m connector.Message
	if err := m.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Data, []byte{1, 2, 3, 4}) {
		t.Fatalf("Data = % x", m.Data)
	}
	b[20] = 9
	if m.Data[0] != 9 {
		t.Error("Data does not alias the input")
	}
	// The capacity stops at the message, so appending to Data cannot
	// overwrite the bytes after it.
	_ = append(m.Data, 0xaa)
	if b[24] != 0xee {
		t.Error("appending to Data overwrote the bytes after the message")
	}
}

func TestUnmarshalBinaryErrors(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"nil", nil, "0 bytes are too short for the 20-byte cn_msg header"},
		{"19 bytes", make([]byte, 19), "19 bytes are too short for the 20-byte cn_msg header"},
		{"len lies", cnBytes(1, 1, 0, 0, 5, 0, []byte{1, 2, 3, 4}), "header len 5 is larger than the 4 payload bytes"},
		{"len lies, no data", cnBytes(1, 1, 0, 0, 1, 0, nil), "header len 1 is larger than the 0 payload bytes"},
		{"len above limit", cnBytes(1, 1, 0, 0, 16385, 0, make([]byte, 16385)), "header len 16385 exceeds the connector's limit of 16384"},
		{"len max u16", cnBytes(1, 1, 0, 0, 0xffff, 0, nil), "header len 65535 exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m connector.Message
			err := m.UnmarshalBinary(tt.b)
			if err == nil {
				t.Fatalf("UnmarshalBinary succeeded: %+v", m)
			}
			if !errors.Is(err, connector.ErrMalformed) {
				t.Errorf("error %v does not match ErrMalformed", err)
			}
			var me *connector.MessageError
			if !errors.As(err, &me) || !strings.Contains(me.Reason, tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			if me != nil && me.HasSender {
				t.Error("a decoding error claims to know the sender")
			}
		})
	}
}

func TestParseMessages(t *testing.T) {
	a := cnBytes(3, 1, 1, 2, 3, 1, []byte{0xa, 0xb, 0xc})
	b := cnBytes(3, 1, 2, 3, 0, 0, nil)
	c := cnBytes(3, 1, 3, 4, 5, 0, []byte("hello"))
	ma := connector.Message{ID: connector.IDW1, Seq: 1, Ack: 2, Flags: 1, Data: []byte{0xa, 0xb, 0xc}}
	mb := connector.Message{ID: connector.IDW1, Seq: 2, Ack: 3}
	mc := connector.Message{ID: connector.IDW1, Seq: 3, Ack: 4, Data: []byte("hello")}
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

	tests := []struct {
		name    string
		in      []byte
		want    []connector.Message
		wantErr string
	}{
		{"empty", nil, nil, ""},
		{"one", a, []connector.Message{ma}, ""},
		{"packed without alignment", cat(a, b, c), []connector.Message{ma, mb, mc}, ""},
		{"netlink padding", cat(a, b, c, []byte{0, 0, 0}), []connector.Message{ma, mb, mc}, ""},
		{"one byte of padding", cat(a, []byte{0}), []connector.Message{ma}, ""},
		{"four zero bytes are not padding", cat(a, make([]byte, 4)), []connector.Message{ma}, "4 bytes are too short"},
		{"non-zero leftover", cat(a, []byte{0, 1}), []connector.Message{ma}, "2 bytes are too short"},
		{"last one cut", cat(a, c[:len(c)-1]), []connector.Message{ma}, "header len 5 is larger than the 4 payload bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := connector.ParseMessages(tt.in)
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(x, y []byte) bool { return bytes.Equal(x, y) })); diff != "" {
				t.Errorf("messages (-want +got):\n%s", diff)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, connector.ErrMalformed) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want ErrMalformed saying %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseMessagesAliases(t *testing.T) {
	in := bytes.Join([][]byte{cnBytes(1, 1, 0, 0, 2, 0, []byte{1, 2}), cnBytes(1, 1, 0, 0, 2, 0, []byte{3, 4})}, nil)
	msgs, err := connector.ParseMessages(in)
	if err != nil || len(msgs) != 2 {
		t.Fatalf("ParseMessages = %v, %v", msgs, err)
	}
	in[21] = 0x77
	if msgs[0].Data[1] != 0x77 {
		t.Error("Data does not alias the input")
	}
	_ = append(msgs[0].Data, 0xff)
	if msgs[1].ID.Idx != 1 {
		t.Error("appending to the first message's Data overwrote the second message")
	}
}
