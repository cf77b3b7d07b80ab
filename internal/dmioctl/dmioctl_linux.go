//go:build linux

package dmioctl

import (
	"bytes"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dmIoctl mirrors struct dm_ioctl (312 bytes).
type dmIoctl struct {
	Version     [3]uint32
	DataSize    uint32
	DataStart   uint32
	TargetCount uint32
	OpenCount   int32
	Flags       uint32
	EventNr     uint32
	Padding     uint32
	Dev         uint64
	Name        [128]byte // DM_NAME_LEN
	UUID        [129]byte // DM_UUID_LEN
	Data        [7]byte
}

// dmTargetSpec mirrors struct dm_target_spec (40 bytes); the parameter
// string follows it.
type dmTargetSpec struct {
	SectorStart uint64
	Length      uint64
	Status      int32
	Next        uint32
	TargetType  [16]byte // DM_MAX_TYPE_NAME
}

const (
	dmIoctlSize = 312
	dmSpecSize  = 40

	dmDevCreate   = 3
	dmDevRemove   = 4
	dmDevSuspend  = 6
	dmDevStatus   = 7
	dmTableLoad   = 9
	dmTableStatus = 12

	dmSuspendFlag     = 1 << 1
	dmStatusTableFlag = 1 << 4
	dmBufferFullFlag  = 1 << 8
)

// The structs have the kernel's sizes on every GOARCH (checked at compile
// time: a negative array length does not build).
var (
	_ [unsafe.Sizeof(dmIoctl{}) - dmIoctlSize]struct{}
	_ [dmIoctlSize - unsafe.Sizeof(dmIoctl{})]struct{}
	_ [unsafe.Sizeof(dmTargetSpec{}) - dmSpecSize]struct{}
	_ [dmSpecSize - unsafe.Sizeof(dmTargetSpec{})]struct{}
)

// dmCmd is _IOWR(DM_IOCTL 0xfd, nr, struct dm_ioctl).
func dmCmd(nr uintptr) uintptr { return 3<<30 | dmIoctlSize<<16 | 0xfd<<8 | nr }

// A Control is an open /dev/mapper/control.
type Control struct{ f *os.File }

// Open opens /dev/mapper/control.
func Open() (*Control, error) {
	f, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return &Control{f}, nil
}

// Close closes the control node.
func (c *Control) Close() error { return c.f.Close() }

// ioctl runs one command. payload follows the header (data_start 312);
// the reply's header and up to bufSize bytes of data are returned.
func (c *Control) ioctl(nr uintptr, name string, flags uint32, targets uint32, payload []byte, bufSize int) (dmIoctl, []byte, error) {
	size := dmIoctlSize + len(payload)
	if bufSize > len(payload) {
		size = dmIoctlSize + bufSize
	}
	buf := make([]byte, size)
	h := (*dmIoctl)(unsafe.Pointer(&buf[0]))
	h.Version = [3]uint32{4, 0, 0}
	h.DataSize = uint32(size)
	h.DataStart = dmIoctlSize
	h.TargetCount = targets
	h.Flags = flags
	copy(h.Name[:len(h.Name)-1], name)
	copy(buf[dmIoctlSize:], payload)
	_, _, e := unix.Syscall(unix.SYS_IOCTL, c.f.Fd(), dmCmd(nr), uintptr(unsafe.Pointer(&buf[0])))
	out := *h
	if e != 0 {
		return out, nil, fmt.Errorf("dm ioctl %d on %q: %w", nr, name, e)
	}
	end := min(int(out.DataSize), len(buf))
	start := min(int(out.DataStart), end)
	return out, buf[start:end], nil
}

// Create creates a device without a table and returns its dev_t.
func (c *Control) Create(name string) (dev uint64, err error) {
	h, _, err := c.ioctl(dmDevCreate, name, 0, 0, nil, 0)
	return h.Dev, err
}

// Remove removes a device (DM_DEV_REMOVE).
func (c *Control) Remove(name string) error {
	_, _, err := c.ioctl(dmDevRemove, name, 0, 0, nil, 0)
	return err
}

// Load loads one target line into the device's inactive table.
func (c *Control) Load(name string, start, length uint64, typ, params string) error {
	spec := make([]byte, dmSpecSize, dmSpecSize+len(params)+8)
	s := (*dmTargetSpec)(unsafe.Pointer(&spec[0]))
	s.SectorStart, s.Length = start, length
	copy(s.TargetType[:15], typ)
	spec = append(spec, params...)
	spec = append(spec, 0)
	for len(spec)%8 != 0 {
		spec = append(spec, 0)
	}
	s = (*dmTargetSpec)(unsafe.Pointer(&spec[0]))
	s.Next = uint32(len(spec))
	_, _, err := c.ioctl(dmTableLoad, name, 0, 1, spec, 0)
	return err
}

// Suspend suspends the device.
func (c *Control) Suspend(name string) error {
	_, _, err := c.ioctl(dmDevSuspend, name, dmSuspendFlag, 0, nil, 0)
	return err
}

// Resume activates the loaded table (DEV_SUSPEND without the suspend flag).
func (c *Control) Resume(name string) error {
	_, _, err := c.ioctl(dmDevSuspend, name, 0, 0, nil, 0)
	return err
}

// Status returns the first target's status line (table true: its table
// line).
func (c *Control) Status(name string, table bool) (string, error) {
	var flags uint32
	if table {
		flags = dmStatusTableFlag
	}
	h, data, err := c.ioctl(dmTableStatus, name, flags, 0, nil, 4096)
	if err != nil {
		return "", err
	}
	if h.Flags&dmBufferFullFlag != 0 {
		return "", fmt.Errorf("dm status of %q: buffer full", name)
	}
	if h.TargetCount == 0 || len(data) < dmSpecSize {
		return "", fmt.Errorf("dm status of %q: no target", name)
	}
	p := data[dmSpecSize:]
	if i := bytes.IndexByte(p, 0); i >= 0 {
		p = p[:i]
	}
	return string(p), nil
}

// DevString formats a dev_t from dm_ioctl.dev (new_encode_dev) as
// "major:minor".
func DevString(dev uint64) string {
	return fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
}

// OpenDev makes a block device node for dev in dir and opens it.
func OpenDev(dir string, dev uint64, flags int) (*os.File, error) {
	p := dir + "/dm-" + DevString(dev)
	if err := unix.Mknod(p, unix.S_IFBLK|0o600, int(dev)); err != nil && err != syscall.EEXIST {
		return nil, fmt.Errorf("mknod %s: %w", p, err)
	}
	return os.OpenFile(p, flags, 0)
}

// DirectIO writes 4 KiB of fill at off (write true) or reads 4 KiB there,
// with O_DIRECT so that the I/O reaches the device at once.
func DirectIO(dir string, dev uint64, off int64, write bool, fill byte) ([]byte, error) {
	f, err := OpenDev(dir, dev, os.O_RDWR|syscall.O_DIRECT)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, err
	}
	defer unix.Munmap(buf)
	if write {
		for i := range buf {
			buf[i] = fill
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			return nil, err
		}
		return nil, f.Sync()
	}
	if _, err := f.ReadAt(buf, off); err != nil {
		return nil, err
	}
	return append([]byte(nil), buf...), nil
}
