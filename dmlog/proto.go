package dmlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"syscall"
)

// Layout of struct dm_ulog_request, include/uapi/linux/dm-log-userspace.h
// (DM_ULOG_REQUEST_VERSION 3; unchanged from Linux 2.6.33 to 7.3 apart from
// the version number). All fields are in host byte order.
const (
	// HeaderLen is sizeof(struct dm_ulog_request): the header that starts
	// every request and every reply with data, before data[].
	HeaderLen = 160

	// UUIDLen is DM_UUID_LEN from include/uapi/linux/dm-ioctl.h: the size of
	// the uuid field, NUL included (at most 128 characters).
	UUIDLen = 129

	// Version is DM_ULOG_REQUEST_VERSION, the protocol version this package
	// implements and writes into requests it encodes. Version 2 let the
	// constructor reply name a device; version 3 added integrated_flush
	// (FLUSH carrying the regions to mark). Requests of any version from 1
	// on share the layout and are accepted.
	Version = 3

	// MaxRequestData is the largest data[] the kernel ever sends: its request
	// buffer is preallocated at 512 bytes (DM_ULOG_PREALLOCED_SIZE in
	// drivers/md/dm-log-userspace-transfer.c), which holds the 20-byte
	// cn_msg and the 160-byte header too. Longer requests fail in the kernel
	// with EINVAL before they are sent.
	MaxRequestData = 512 - 20 - HeaderLen

	// MaxReplyData bounds the data of a reply this package encodes: a
	// connector message to the kernel carries at most 16384-20 bytes. The
	// kernel accepts much less for most request types (ReplyDataLimit).
	MaxReplyData = 16384 - 20 - HeaderLen

	// MaxRegionsPerRequest is how many region numbers the kernel batches at
	// most into one MARK_REGION, CLEAR_REGION or FLUSH request
	// (MAX_FLUSH_GROUP_COUNT in drivers/md/dm-log-userspace-base.c).
	MaxRegionsPerRequest = 32

	// DeviceNameLen is DM_NAME_LEN: the kernel's buffer for the device name
	// a constructor reply may carry, NUL included.
	DeviceNameLen = 128

	offLUID        = 0
	offUUID        = 8
	offPadding     = 8 + UUIDLen // 137
	offVersion     = 140
	offError       = 144
	offSeq         = 148
	offRequestType = 152
	offDataSize    = 156
)

// A RequestType is the low 8 bits of dm_ulog_request.request_type
// (DM_ULOG_REQUEST_TYPE()); the upper 24 bits are reserved and kept apart in
// Header.TypeFlags. Each type is one call of the kernel's dirty log interface
// (include/linux/dm-dirty-log.h) forwarded to userspace.
type RequestType uint8

// Request types, DM_ULOG_* in include/uapi/linux/dm-log-userspace.h. The
// comments give the request data the kernel sends and the reply data it
// expects; "s64 bool" is an int64 that is 0 or 1.
const (
	// TypeCtr constructs a log: data is "<target length in sectors> <log
	// args>" (the uuid and integrated_flush removed), without a NUL the first
	// time and with a trailing NUL when the kernel re-sends it to a restarted
	// server. The reply may carry a NUL-terminated device name the kernel
	// opens as the log device (version 2 and later).
	TypeCtr RequestType = 1
	// TypeDtr destroys the log. No data either way.
	TypeDtr RequestType = 2
	// TypePresuspend, TypePostsuspend and TypeResume bracket a suspend of
	// the mirror. No data either way.
	TypePresuspend  RequestType = 3
	TypePostsuspend RequestType = 4
	TypeResume      RequestType = 5
	// TypeGetRegionSize asks for the region size in 512-byte sectors: reply
	// u64.
	TypeGetRegionSize RequestType = 6
	// TypeIsClean: data u64 region; reply s64 bool.
	TypeIsClean RequestType = 7
	// TypeInSync: data u64 region; reply s64 bool.
	TypeInSync RequestType = 8
	// TypeFlush commits the log. With integrated_flush its data is the u64
	// regions to mark first; otherwise none. No reply data.
	TypeFlush RequestType = 9
	// TypeMarkRegion and TypeClearRegion: data u64 regions (at most 32); no
	// reply data.
	TypeMarkRegion  RequestType = 10
	TypeClearRegion RequestType = 11
	// TypeGetResyncWork asks for a region to recover: reply {s64 found; u64
	// region}.
	TypeGetResyncWork RequestType = 12
	// TypeSetRegionSync: data {u64 region; s64 in_sync}; no reply data.
	TypeSetRegionSync RequestType = 13
	// TypeGetSyncCount: reply u64, the number of regions in sync.
	TypeGetSyncCount RequestType = 14
	// TypeStatusInfo and TypeStatusTable ask for the log's part of the
	// mirror's status line: reply a string. The kernels this package is
	// tested on (6.1 to 7.3) build the table line themselves and never send
	// STATUS_TABLE; only STATUS_INFO reaches a server.
	TypeStatusInfo  RequestType = 15
	TypeStatusTable RequestType = 16
	// TypeIsRemoteRecovering: data u64 region; reply {s64 recovering; u64
	// in_sync_hint}, the hint being the first region not known to be in
	// sync.
	TypeIsRemoteRecovering RequestType = 17
)

var typeNames = [...]string{
	TypeCtr:                "CTR",
	TypeDtr:                "DTR",
	TypePresuspend:         "PRESUSPEND",
	TypePostsuspend:        "POSTSUSPEND",
	TypeResume:             "RESUME",
	TypeGetRegionSize:      "GET_REGION_SIZE",
	TypeIsClean:            "IS_CLEAN",
	TypeInSync:             "IN_SYNC",
	TypeFlush:              "FLUSH",
	TypeMarkRegion:         "MARK_REGION",
	TypeClearRegion:        "CLEAR_REGION",
	TypeGetResyncWork:      "GET_RESYNC_WORK",
	TypeSetRegionSync:      "SET_REGION_SYNC",
	TypeGetSyncCount:       "GET_SYNC_COUNT",
	TypeStatusInfo:         "STATUS_INFO",
	TypeStatusTable:        "STATUS_TABLE",
	TypeIsRemoteRecovering: "IS_REMOTE_RECOVERING",
}

// String returns the kernel's name without the DM_ULOG_ prefix ("CTR"), or
// "TYPE(n)" for an unknown type.
func (t RequestType) String() string {
	if t.Valid() {
		return typeNames[t]
	}
	return "TYPE(" + strconv.Itoa(int(t)) + ")"
}

// Valid reports whether t is one of the 17 types the kernel defines.
func (t RequestType) Valid() bool { return t >= TypeCtr && t <= TypeIsRemoteRecovering }

// RequestDataSize returns the exact size of the data the kernel sends with a
// request of type t, or -1 when it varies (CTR: a string; FLUSH, MARK_REGION,
// CLEAR_REGION: a list of u64).
func (t RequestType) RequestDataSize() int {
	switch t {
	case TypeCtr, TypeFlush, TypeMarkRegion, TypeClearRegion:
		return -1
	case TypeIsClean, TypeInSync, TypeIsRemoteRecovering:
		return 8
	case TypeSetRegionSync:
		return 16
	}
	return 0
}

// ReplyDataLimit returns the most reply data the kernel accepts for type t:
// the size of the buffer it passes (drivers/md/dm-log-userspace-base.c). A
// reply with more data is refused with ENOSPC and the call fails. For the
// status types the room left in the status line is not known in advance
// (the result is -1); keep those strings short.
func (t RequestType) ReplyDataLimit() int {
	switch t {
	case TypeCtr:
		return DeviceNameLen
	case TypeGetRegionSize, TypeIsClean, TypeInSync, TypeGetSyncCount:
		return 8
	case TypeGetResyncWork, TypeIsRemoteRecovering:
		return 16
	case TypeStatusInfo, TypeStatusTable:
		return -1
	}
	return 0
}

// Errors. Each is returned wrapped in an error that says what was wrong;
// test with errors.Is.
var (
	// ErrShort matches a request or reply shorter than its header or than
	// the data_size its header declares.
	ErrShort = errors.New("dmlog: message shorter than its header says")
	// ErrInvalid matches a header or data that break the protocol: an
	// unknown request type, a data size that does not fit the type, a uuid
	// without its NUL.
	ErrInvalid = errors.New("dmlog: invalid request")
)

// A Header is the decoded struct dm_ulog_request without its data.
type Header struct {
	// LUID is the kernel's local id of the log. The kernel uses the address
	// of its log context, so it is a kernel pointer: a small KASLR leak,
	// visible only to processes that may listen on group 7.
	LUID uint64
	// UUID names the mirror (the uuid in the table line, at most 128
	// bytes). Logs are identified by UUID and LUID together.
	UUID string
	// Version is the sender's DM_ULOG_REQUEST_VERSION (3 since Linux 3.16).
	Version uint32
	// Error is 0 or a negative errno, set by the server in replies.
	Error int32
	// Seq is the kernel's request sequence number; a reply must carry the
	// request's Seq. The kernel resends an unanswered request under a new
	// Seq.
	Seq uint32
	// Type is the request type (the low 8 bits of request_type).
	Type RequestType
	// TypeFlags are the reserved upper 24 bits of request_type, shifted
	// down; the kernel sends 0.
	TypeFlags uint32
}

// A Request is one decoded dm_ulog_request. Data aliases the bytes it was
// decoded from.
type Request struct {
	Header
	Data []byte
}

func (r Request) String() string {
	return fmt.Sprintf("%v seq %d uuid %q luid %#x data %d bytes", r.Type, r.Seq, r.UUID, r.LUID, len(r.Data))
}

// ParseRequest decodes a request from a connector message payload (the
// cn_msg data of a message with id 7:1). It checks the lengths, that the
// uuid is NUL-terminated, that the type is known and that the data size fits
// the type; it does not copy: Data and the payload share memory. Bytes after
// the declared data are ignored, as the kernel does.
func ParseRequest(p []byte) (Request, error) { return parseRequest(p, "") }

// parseRequest is ParseRequest; a uuid equal to known is returned as known
// without allocating.
func parseRequest(p []byte, known string) (Request, error) {
	r, err := parse(p, known)
	if err != nil {
		return r, err
	}
	if !r.Type.Valid() {
		return r, fmt.Errorf("%w: unknown request type %d", ErrInvalid, r.Type)
	}
	n := len(r.Data)
	if n > MaxRequestData {
		return r, fmt.Errorf("%w: %v with %d data bytes, more than the kernel's %d", ErrInvalid, r.Type, n, MaxRequestData)
	}
	switch want := r.Type.RequestDataSize(); {
	case want >= 0 && n != want:
		return r, fmt.Errorf("%w: %v with %d data bytes, want %d", ErrInvalid, r.Type, n, want)
	case want < 0 && r.Type != TypeCtr && n%8 != 0:
		return r, fmt.Errorf("%w: %v with %d data bytes, not a list of u64 regions", ErrInvalid, r.Type, n)
	}
	return r, nil
}

// parse decodes the header and data of a request or a reply.
func parse(p []byte, known string) (Request, error) {
	var r Request
	if len(p) < HeaderLen {
		return r, fmt.Errorf("%w: %d bytes, the header alone is %d", ErrShort, len(p), HeaderLen)
	}
	ne := binary.NativeEndian
	uuid := p[offUUID : offUUID+UUIDLen]
	end := bytes.IndexByte(uuid, 0)
	if end < 0 {
		return r, fmt.Errorf("%w: uuid is not NUL-terminated within %d bytes", ErrInvalid, UUIDLen)
	}
	r.LUID = ne.Uint64(p[offLUID:])
	if string(uuid[:end]) == known {
		r.UUID = known
	} else {
		r.UUID = string(uuid[:end])
	}
	r.Version = ne.Uint32(p[offVersion:])
	r.Error = int32(ne.Uint32(p[offError:]))
	r.Seq = ne.Uint32(p[offSeq:])
	rt := ne.Uint32(p[offRequestType:])
	r.Type = RequestType(rt & 0xff)
	r.TypeFlags = rt >> 8
	size := ne.Uint32(p[offDataSize:])
	if uint64(size) > uint64(len(p)-HeaderLen) {
		return r, fmt.Errorf("%w: data_size %d, but %d data bytes follow the header", ErrShort, size, len(p)-HeaderLen)
	}
	r.Data = p[HeaderLen : HeaderLen+int(size)]
	return r, nil
}

// AppendRequest appends the encoding of r to b: the header, with data_size
// set to len(r.Data), and the data. Set Version to Version for what the
// kernel sends; it is written as given. It is what the
// kernel sends; fakes and tests use it. It fails for a uuid of 129 bytes or
// more, a uuid with a NUL, or data longer than MaxReplyData.
func AppendRequest(b []byte, r Request) ([]byte, error) {
	if err := checkHeader(r.Header, len(r.Data)); err != nil {
		return b, err
	}
	b = appendHeader(b, r.Header, len(r.Data))
	return append(b, r.Data...), nil
}

func checkHeader(h Header, n int) error {
	if len(h.UUID) >= UUIDLen {
		return fmt.Errorf("%w: uuid of %d bytes, at most %d", ErrInvalid, len(h.UUID), UUIDLen-1)
	}
	if bytes.IndexByte([]byte(h.UUID), 0) >= 0 {
		return fmt.Errorf("%w: uuid contains a NUL byte", ErrInvalid)
	}
	if h.TypeFlags > 0xffffff {
		return fmt.Errorf("%w: type flags %#x do not fit 24 bits", ErrInvalid, h.TypeFlags)
	}
	if n > MaxReplyData {
		return fmt.Errorf("%w: %d data bytes, at most %d fit a connector message", ErrInvalid, n, MaxReplyData)
	}
	return nil
}

func appendHeader(b []byte, h Header, n int) []byte {
	ne := binary.NativeEndian
	b = ne.AppendUint64(b, h.LUID)
	b = append(b, h.UUID...)
	for i := len(h.UUID); i < UUIDLen+3; i++ { // NUL fill and padding[3]
		b = append(b, 0)
	}
	b = ne.AppendUint32(b, h.Version)
	b = ne.AppendUint32(b, uint32(h.Error))
	b = ne.AppendUint32(b, h.Seq)
	b = ne.AppendUint32(b, uint32(h.Type)|h.TypeFlags<<8)
	b = ne.AppendUint32(b, uint32(n))
	return b
}

// AppendReply appends the payload of a reply to req to b: req's header
// echoed (the kernel matches on its Seq) with Error set to -errno and
// data_size to len(data), then data. Send it as a connector message with id
// 7:1 to the kernel (port 0). It fails if data is longer than
// MaxReplyData or than the kernel accepts for the type (ReplyDataLimit), so
// that a reply the kernel would refuse with ENOSPC is caught here.
func AppendReply(b []byte, req Header, errno syscall.Errno, data []byte) ([]byte, error) {
	if lim := req.Type.ReplyDataLimit(); lim >= 0 && len(data) > lim {
		return b, fmt.Errorf("%w: %d reply data bytes for %v, the kernel accepts at most %d", ErrInvalid, len(data), req.Type, lim)
	}
	if errno > 0x7fffffff {
		return b, fmt.Errorf("%w: errno %d out of range", ErrInvalid, uint(errno))
	}
	h := req
	h.Error = -int32(errno)
	if err := checkHeader(h, len(data)); err != nil {
		return b, err
	}
	b = appendHeader(b, h, len(data))
	return append(b, data...), nil
}

// A Reply is a decoded reply payload, as the kernel reads it.
type Reply struct {
	Header
	Data []byte
}

// Errno returns the reply's error as a positive errno, 0 for success.
func (r Reply) Errno() syscall.Errno {
	if r.Error >= 0 {
		return 0
	}
	return syscall.Errno(-int64(r.Error))
}

// ParseReply decodes a reply with data (a cn_msg payload of at least
// HeaderLen bytes) as the kernel does: it looks at Seq, Error and the data;
// unlike ParseRequest it accepts any type. A zero-length payload is not a
// reply header but an acknowledgement: see Ack.
func ParseReply(p []byte) (Reply, error) {
	r, err := parse(p, "")
	return Reply(r), err
}

// An Ack is the other reply form: a connector message with no payload whose
// cn_msg.seq is the request's Seq and whose cn_msg.ack is a positive errno
// (0 for success). The kernel answers an Ack with EAGAIN by resending the
// request at once under a new Seq; any other Ack completes the request with
// that error and no data.
type Ack struct {
	Seq   uint32
	Errno syscall.Errno
}

// Region reads the u64 region of an IS_CLEAN, IN_SYNC or
// IS_REMOTE_RECOVERING request.
func (r Request) Region() (uint64, error) {
	switch r.Type {
	case TypeIsClean, TypeInSync, TypeIsRemoteRecovering:
	default:
		return 0, fmt.Errorf("%w: %v carries no single region", ErrInvalid, r.Type)
	}
	if len(r.Data) != 8 {
		return 0, fmt.Errorf("%w: %v with %d data bytes, want 8", ErrInvalid, r.Type, len(r.Data))
	}
	return binary.NativeEndian.Uint64(r.Data), nil
}

// AppendRegions appends the regions of a MARK_REGION, CLEAR_REGION or FLUSH
// request to dst (FLUSH carries them only with integrated_flush).
func (r Request) AppendRegions(dst []uint64) ([]uint64, error) {
	switch r.Type {
	case TypeMarkRegion, TypeClearRegion, TypeFlush:
	default:
		return dst, fmt.Errorf("%w: %v carries no region list", ErrInvalid, r.Type)
	}
	if len(r.Data)%8 != 0 {
		return dst, fmt.Errorf("%w: %v with %d data bytes, not a list of u64 regions", ErrInvalid, r.Type, len(r.Data))
	}
	for i := 0; i < len(r.Data); i += 8 {
		dst = append(dst, binary.NativeEndian.Uint64(r.Data[i:]))
	}
	return dst, nil
}

// RegionSync reads a SET_REGION_SYNC request: {u64 region; s64 in_sync}.
func (r Request) RegionSync() (region uint64, inSync bool, err error) {
	if r.Type != TypeSetRegionSync {
		return 0, false, fmt.Errorf("%w: %v is not SET_REGION_SYNC", ErrInvalid, r.Type)
	}
	if len(r.Data) != 16 {
		return 0, false, fmt.Errorf("%w: %v with %d data bytes, want 16", ErrInvalid, r.Type, len(r.Data))
	}
	return binary.NativeEndian.Uint64(r.Data), binary.NativeEndian.Uint64(r.Data[8:]) != 0, nil
}

// CtrArgs reads a CTR request: the target length in 512-byte sectors and
// the log's arguments, split on spaces (for "userspace 3 <uuid> core 1024"
// in a mirror table, ["core", "1024"]). A trailing NUL, sent when the
// kernel re-sends the constructor, is dropped.
func (r Request) CtrArgs() (sectors uint64, args []string, err error) {
	if r.Type != TypeCtr {
		return 0, nil, fmt.Errorf("%w: %v is not CTR", ErrInvalid, r.Type)
	}
	s := r.Data
	if i := bytes.IndexByte(s, 0); i >= 0 {
		if i != len(s)-1 {
			return 0, nil, fmt.Errorf("%w: CTR string has a NUL byte before its end", ErrInvalid)
		}
		s = s[:i]
	}
	f := bytes.Fields(s)
	if len(f) == 0 {
		return 0, nil, fmt.Errorf("%w: empty CTR string; want \"<sectors> <log args>\"", ErrInvalid)
	}
	sectors, err = strconv.ParseUint(string(f[0]), 10, 64)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: CTR string %q does not start with the target length in sectors", ErrInvalid, s)
	}
	args = make([]string, len(f)-1)
	for i, a := range f[1:] {
		args[i] = string(a)
	}
	return sectors, args, nil
}

// AppendUint64 appends v in host byte order: the reply data of
// GET_REGION_SIZE and GET_SYNC_COUNT, and the request data of IS_CLEAN,
// IN_SYNC and IS_REMOTE_RECOVERING.
func AppendUint64(b []byte, v uint64) []byte { return binary.NativeEndian.AppendUint64(b, v) }

// AppendBool appends v as the s64 0 or 1 of IS_CLEAN and IN_SYNC replies.
func AppendBool(b []byte, v bool) []byte {
	return binary.NativeEndian.AppendUint64(b, b2u(v))
}

// AppendResyncWork appends a GET_RESYNC_WORK reply: {s64 found; u64 region}.
func AppendResyncWork(b []byte, region uint64, found bool) []byte {
	b = binary.NativeEndian.AppendUint64(b, b2u(found))
	return binary.NativeEndian.AppendUint64(b, region)
}

// AppendRegionSync appends SET_REGION_SYNC request data: {u64 region; s64
// in_sync}.
func AppendRegionSync(b []byte, region uint64, inSync bool) []byte {
	b = binary.NativeEndian.AppendUint64(b, region)
	return binary.NativeEndian.AppendUint64(b, b2u(inSync))
}

// AppendRemoteRecovering appends an IS_REMOTE_RECOVERING reply: {s64
// recovering; u64 in_sync_hint}.
func AppendRemoteRecovering(b []byte, recovering bool, inSyncHint uint64) []byte {
	b = binary.NativeEndian.AppendUint64(b, b2u(recovering))
	return binary.NativeEndian.AppendUint64(b, inSyncHint)
}

// AppendString appends s and a NUL: the reply data of STATUS_INFO,
// STATUS_TABLE and (a device name) CTR.
func AppendString(b []byte, s string) []byte { return append(append(b, s...), 0) }

func b2u(v bool) uint64 {
	if v {
		return 1
	}
	return 0
}

// ParseUint64 reads a u64 or s64 reply (GET_REGION_SIZE, GET_SYNC_COUNT,
// IS_CLEAN, IN_SYNC).
func ParseUint64(data []byte) (uint64, error) {
	if len(data) != 8 {
		return 0, fmt.Errorf("%w: %d bytes, want 8", ErrShort, len(data))
	}
	return binary.NativeEndian.Uint64(data), nil
}

// ParsePair reads a 16-byte reply: {s64 found; u64 region} of
// GET_RESYNC_WORK, {s64 recovering; u64 in_sync_hint} of
// IS_REMOTE_RECOVERING.
func ParsePair(data []byte) (flag bool, v uint64, err error) {
	if len(data) != 16 {
		return false, 0, fmt.Errorf("%w: %d bytes, want 16", ErrShort, len(data))
	}
	return binary.NativeEndian.Uint64(data) != 0, binary.NativeEndian.Uint64(data[8:]), nil
}
