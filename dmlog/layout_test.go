package dmlog

import (
	"testing"
	"unsafe"
)

// kernelRequest mirrors struct dm_ulog_request of
// include/uapi/linux/dm-log-userspace.h field for field. It is used only to
// check that the offsets the codec uses are the C layout on the GOARCH the
// test is built for (go vet and the tests run under GOARCH=386 too, where
// uint64 is 4-byte aligned).
type kernelRequest struct {
	LUID        uint64
	UUID        [UUIDLen]byte
	Padding     [3]byte
	Version     uint32
	Error       int32
	Seq         uint32
	RequestType uint32
	DataSize    uint32
}

func TestLayout(t *testing.T) {
	var r kernelRequest
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof", unsafe.Sizeof(r), HeaderLen},
		{"luid", unsafe.Offsetof(r.LUID), offLUID},
		{"uuid", unsafe.Offsetof(r.UUID), offUUID},
		{"padding", unsafe.Offsetof(r.Padding), offPadding},
		{"version", unsafe.Offsetof(r.Version), offVersion},
		{"error", unsafe.Offsetof(r.Error), offError},
		{"seq", unsafe.Offsetof(r.Seq), offSeq},
		{"request_type", unsafe.Offsetof(r.RequestType), offRequestType},
		{"data_size", unsafe.Offsetof(r.DataSize), offDataSize},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	if MaxRequestData != 332 {
		t.Errorf("MaxRequestData = %d, want 332 (512 - 20 - 160)", MaxRequestData)
	}
	// The pairs of GET_RESYNC_WORK and IS_REMOTE_RECOVERING replies.
	type pair struct {
		I int64
		R uint64
	}
	if s := unsafe.Sizeof(pair{}); s != 16 {
		t.Errorf("reply pair is %d bytes, want 16", s)
	}
}
