package dmlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"syscall"
	"testing"
)

const testUUID = "LVM-mirror-test-0001"

// kernelBytes builds a request the way dm_consult_userspace does
// (drivers/md/dm-log-userspace-transfer.c): the 512-byte buffer zeroed, the
// uuid copied with its NUL fill, version 3, data appended.
func kernelBytes(typ RequestType, seq uint32, data []byte) []byte {
	b := make([]byte, HeaderLen+len(data))
	ne := binary.NativeEndian
	ne.PutUint64(b[0:], 0xffff8880048c4a00)
	copy(b[8:], testUUID)
	ne.PutUint32(b[140:], 3)
	ne.PutUint32(b[148:], seq)
	ne.PutUint32(b[152:], uint32(typ))
	ne.PutUint32(b[156:], uint32(len(data)))
	copy(b[160:], data)
	return b
}

func u64s(v ...uint64) []byte {
	var b []byte
	for _, x := range v {
		b = AppendUint64(b, x)
	}
	return b
}

// seedRequests are one request of every type, laid out by hand from the
// header (see kernelBytes), plus the captured kernel bytes in testdata.
func seedRequests() map[string][]byte {
	return map[string][]byte{
		"ctr":         kernelBytes(TypeCtr, 1, []byte("8192 core 1024")),
		"ctr-again":   kernelBytes(TypeCtr, 9, []byte("8192 core 1024\x00")),
		"dtr":         kernelBytes(TypeDtr, 2, nil),
		"presuspend":  kernelBytes(TypePresuspend, 3, nil),
		"postsuspend": kernelBytes(TypePostsuspend, 4, nil),
		"resume":      kernelBytes(TypeResume, 5, nil),
		"regionsize":  kernelBytes(TypeGetRegionSize, 6, nil),
		"isclean":     kernelBytes(TypeIsClean, 7, u64s(3)),
		"insync":      kernelBytes(TypeInSync, 8, u64s(4)),
		"flush":       kernelBytes(TypeFlush, 9, nil),
		"flush-int":   kernelBytes(TypeFlush, 10, u64s(1, 2)),
		"mark":        kernelBytes(TypeMarkRegion, 11, u64s(0, 5, 7)),
		"clear":       kernelBytes(TypeClearRegion, 12, u64s(0)),
		"resyncwork":  kernelBytes(TypeGetResyncWork, 13, nil),
		"setsync":     kernelBytes(TypeSetRegionSync, 14, AppendRegionSync(nil, 2, true)),
		"synccount":   kernelBytes(TypeGetSyncCount, 15, nil),
		"statusinfo":  kernelBytes(TypeStatusInfo, 16, nil),
		"statustable": kernelBytes(TypeStatusTable, 17, nil),
		"remote":      kernelBytes(TypeIsRemoteRecovering, 18, u64s(6)),
	}
}

func TestParseRequestEveryType(t *testing.T) {
	seen := map[RequestType]bool{}
	for name, b := range seedRequests() {
		r, err := ParseRequest(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		seen[r.Type] = true
		if r.UUID != testUUID || r.LUID != 0xffff8880048c4a00 || r.Version != 3 || r.TypeFlags != 0 {
			t.Errorf("%s: header %+v", name, r.Header)
		}
		// Encoding the decoded request gives the same bytes back.
		out, err := AppendRequest(nil, r)
		if err != nil {
			t.Fatalf("%s: AppendRequest: %v", name, err)
		}
		if !bytes.Equal(out, b) {
			t.Errorf("%s: re-encoded\n%x\nwant\n%x", name, out, b)
		}
	}
	for typ := TypeCtr; typ <= TypeIsRemoteRecovering; typ++ {
		if !seen[typ] {
			t.Errorf("no seed for %v", typ)
		}
		if strings.HasPrefix(typ.String(), "TYPE(") {
			t.Errorf("%d has no name", typ)
		}
	}
	if s := RequestType(0).String(); s != "TYPE(0)" {
		t.Errorf("type 0 = %q", s)
	}
}

func TestTypedPayloads(t *testing.T) {
	r, _ := ParseRequest(kernelBytes(TypeIsClean, 1, u64s(42)))
	if reg, err := r.Region(); err != nil || reg != 42 {
		t.Errorf("Region = %d, %v", reg, err)
	}
	r, _ = ParseRequest(kernelBytes(TypeMarkRegion, 1, u64s(1, 2, 3)))
	if rs, err := r.AppendRegions(nil); err != nil || len(rs) != 3 || rs[2] != 3 {
		t.Errorf("Regions = %v, %v", rs, err)
	}
	if _, err := r.Region(); !errors.Is(err, ErrInvalid) {
		t.Errorf("Region of MARK_REGION: %v", err)
	}
	r, _ = ParseRequest(kernelBytes(TypeSetRegionSync, 1, AppendRegionSync(nil, 9, true)))
	if reg, in, err := r.RegionSync(); err != nil || reg != 9 || !in {
		t.Errorf("RegionSync = %d %v %v", reg, in, err)
	}
	for _, s := range []string{"8192 core 1024", "8192 core 1024\x00"} {
		r, _ = ParseRequest(kernelBytes(TypeCtr, 1, []byte(s)))
		n, args, err := r.CtrArgs()
		if err != nil || n != 8192 || strings.Join(args, ",") != "core,1024" {
			t.Errorf("CtrArgs(%q) = %d %q %v", s, n, args, err)
		}
	}
	for _, s := range []string{"", "x core", "8192\x00core"} {
		r, _ = ParseRequest(kernelBytes(TypeCtr, 1, []byte(s)))
		if _, _, err := r.CtrArgs(); !errors.Is(err, ErrInvalid) {
			t.Errorf("CtrArgs(%q): %v, want ErrInvalid", s, err)
		}
	}
}

func TestParseRequestRejects(t *testing.T) {
	good := kernelBytes(TypeIsClean, 1, u64s(1))
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	ne := binary.NativeEndian
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"header-1", good[:HeaderLen-1], ErrShort},
		{"data cut", good[:len(good)-1], ErrShort},
		{"data_size huge", mod(func(b []byte) []byte { ne.PutUint32(b[156:], 0xffffffff); return b }), ErrShort},
		{"uuid without NUL", mod(func(b []byte) []byte {
			for i := 8; i < 8+UUIDLen; i++ {
				b[i] = 'a'
			}
			return b
		}), ErrInvalid},
		{"type 0", mod(func(b []byte) []byte { ne.PutUint32(b[152:], 0); return b }), ErrInvalid},
		{"type 18", mod(func(b []byte) []byte { ne.PutUint32(b[152:], 18); return b }), ErrInvalid},
		{"IS_CLEAN size", kernelBytes(TypeIsClean, 1, u64s(1, 2)), ErrInvalid},
		{"MARK odd", kernelBytes(TypeMarkRegion, 1, []byte{1, 2, 3}), ErrInvalid},
		{"MARK too long", kernelBytes(TypeMarkRegion, 1, make([]byte, 336)), ErrInvalid},
		{"DTR with data", kernelBytes(TypeDtr, 1, []byte{1}), ErrInvalid},
	} {
		if _, err := ParseRequest(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// The reserved upper bits are kept apart, not folded into the type.
	b := mod(func(b []byte) []byte { ne.PutUint32(b[152:], 7|0x5500); return b })
	r, err := ParseRequest(b)
	if err != nil || r.Type != TypeIsClean || r.TypeFlags != 0x55 {
		t.Errorf("flags: %+v %v", r.Header, err)
	}
}

func TestAppendReply(t *testing.T) {
	req, _ := ParseRequest(kernelBytes(TypeGetResyncWork, 77, nil))
	b, err := AppendReply(nil, req.Header, 0, AppendResyncWork(nil, 5, true))
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseReply(b)
	if err != nil || r.Seq != 77 || r.Errno() != 0 || r.Type != TypeGetResyncWork || r.UUID != testUUID {
		t.Fatalf("reply %+v %v", r, err)
	}
	if found, reg, err := ParsePair(r.Data); err != nil || !found || reg != 5 {
		t.Errorf("pair %v %d %v", found, reg, err)
	}
	b, _ = AppendReply(nil, req.Header, syscall.EIO, nil)
	if r, _ := ParseReply(b); r.Errno() != syscall.EIO || r.Error != -int32(syscall.EIO) {
		t.Errorf("errno %v (%d)", r.Errno(), r.Error)
	}
	// More data than the kernel's buffer for the type: refused here rather
	// than with ENOSPC in the kernel.
	if _, err := AppendReply(nil, req.Header, 0, make([]byte, 17)); !errors.Is(err, ErrInvalid) {
		t.Errorf("17 bytes for GET_RESYNC_WORK: %v", err)
	}
	mark, _ := ParseRequest(kernelBytes(TypeMarkRegion, 1, u64s(1)))
	if _, err := AppendReply(nil, mark.Header, 0, []byte{0}); !errors.Is(err, ErrInvalid) {
		t.Errorf("data for MARK_REGION: %v", err)
	}
	long := Header{UUID: strings.Repeat("u", UUIDLen), Type: TypeDtr}
	if _, err := AppendReply(nil, long, 0, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("129-byte uuid: %v", err)
	}
	if _, err := AppendRequest(nil, Request{Header: Header{UUID: "a\x00b"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("uuid with NUL: %v", err)
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, b := range seedRequests() {
		f.Add(b)
	}
	for _, b := range capturedRequests(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRequest(b)
		if err != nil {
			if !errors.Is(err, ErrShort) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error matches no sentinel: %v", err)
			}
			return
		}
		if len(r.Data) > MaxRequestData || !r.Type.Valid() {
			t.Fatalf("accepted %+v", r)
		}
		_, _ = r.AppendRegions(nil)
		_, _, _ = r.CtrArgs()
		_, _ = r.Region()
		_, _, _ = r.RegionSync()
		// A decoded request re-encodes to its first HeaderLen+len(Data)
		// bytes, except for what the header does not keep: bytes after the
		// uuid's NUL and the padding.
		out, err := AppendRequest(nil, r)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", r.Header, err)
		}
		r2, err := ParseRequest(out)
		want := r.Header
		if err != nil || r2.Header != want || !bytes.Equal(r2.Data, r.Data) {
			t.Fatalf("round trip: %+v %v, want %+v", r2.Header, err, want)
		}
		if rep, err := AppendReply(nil, r.Header, syscall.EAGAIN, nil); err != nil {
			t.Fatalf("reply: %v", err)
		} else if p, err := ParseReply(rep); err != nil || p.Seq != r.Seq || p.Errno() != syscall.EAGAIN {
			t.Fatalf("reply round trip: %+v %v", p, err)
		}
	})
}
