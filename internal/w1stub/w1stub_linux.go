//go:build linux

package w1stub

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/w1"
	"golang.org/x/sys/unix"
)

const (
	// Addr is the stub chip's I2C address (i2c-stub chip_addr=0x18).
	Addr = 0x18
	// DS2482 registers as i2c-stub serves them: the driver writes a
	// command byte and reads the status right after, which the stub
	// answers from the register named by that command byte
	// (drivers/w1/masters/ds2482.c, drivers/i2c/i2c-stub.c).
	regDeviceReset = 0xf0 // status after DEVICE RESET: RST|LL = 0x18, which the probe expects
	reg1WireReset  = 0xb4 // status after 1-WIRE RESET: PPD (0x02) = presence pulse
	// ioctls of include/uapi/linux/i2c-dev.h; SMBus constants of
	// include/uapi/linux/i2c.h.
	ioctlI2CSlaveForce = 0x0706
	ioctlI2CSMBus      = 0x0720
	smbusWrite         = 0
	smbusByteData      = 2
)

// ErrNoStub reports that no i2c-stub adapter exists: the modules are not
// loaded (outside the kernel matrix).
var ErrNoStub = errors.New("no i2c-stub adapter: the modules of testdata/kmatrix-modules (wire, i2c-stub chip_addr=0x18, i2c-dev, ds2482) are not loaded")

// A Bus is the DS2482 on i2c-stub.
type Bus struct {
	Adapter string      // /sys/bus/i2c/devices/i2c-N
	Dev     string      // /dev/i2c-N
	Master  w1.MasterID // the kernel's id of the bus master
	Added   w1.Event    // the MASTER_ADD notification
	Raw     []byte      // its payload
}

// Setup instantiates the bus master, with presence on reset, and waits for
// its MASTER_ADD on group 3 (so it needs root).
func Setup() (*Bus, error) {
	b := &Bus{}
	names, _ := filepath.Glob("/sys/bus/i2c/devices/i2c-*/name")
	for _, n := range names {
		if s, err := os.ReadFile(n); err == nil && strings.HasPrefix(string(s), "SMBus stub driver") {
			b.Adapter = filepath.Dir(n)
		}
	}
	if b.Adapter == "" {
		return nil, ErrNoStub
	}
	b.Dev = "/dev/" + filepath.Base(b.Adapter)
	if err := b.setReg(regDeviceReset, 0x18); err != nil {
		return nil, err
	}
	if err := b.SetPresence(true); err != nil {
		return nil, err
	}
	ev, err := connector.Dial(&connector.Config{Groups: []connector.Group{w1.Group}})
	if err != nil {
		return nil, err
	}
	defer ev.Close()
	if err := os.WriteFile(b.Adapter+"/new_device", []byte(fmt.Sprintf("ds2482 %#x", Addr)), 0); err != nil {
		return nil, fmt.Errorf("instantiating the ds2482: %w", err)
	}
	e, raw, err := NextEvent(ev, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("waiting for MASTER_ADD: %w", err)
	}
	if e.Kind != w1.MasterAdded {
		return nil, fmt.Errorf("first notification after new_device is %v, want master added", e)
	}
	b.Master, b.Added, b.Raw = e.Master, e, raw
	return b, nil
}

// Remove deletes the ds2482 (the kernel then sends MASTER_REMOVE).
func (b *Bus) Remove() error {
	return os.WriteFile(b.Adapter+"/delete_device", []byte(fmt.Sprintf("%#x", Addr)), 0)
}

// SetPresence sets whether a 1-Wire reset sees a presence pulse.
func (b *Bus) SetPresence(on bool) error {
	v := byte(0)
	if on {
		v = 0x02
	}
	return b.setReg(reg1WireReset, v)
}

// setReg writes one register of the stub chip through /dev/i2c-N
// (I2C_SLAVE_FORCE, as the ds2482 driver holds the address once bound).
func (b *Bus) setReg(reg, val byte) error {
	f, err := os.OpenFile(b.Dev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening %s (needs i2c-dev): %w", b.Dev, err)
	}
	defer f.Close()
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), ioctlI2CSlaveForce, Addr); e != 0 {
		return fmt.Errorf("I2C_SLAVE_FORCE %#x on %s: %w", Addr, b.Dev, e)
	}
	var data [34]byte // union i2c_smbus_data
	data[0] = val
	args := struct { // struct i2c_smbus_ioctl_data
		readWrite uint8
		command   uint8
		size      uint32
		data      unsafe.Pointer
	}{smbusWrite, reg, smbusByteData, unsafe.Pointer(&data)}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), ioctlI2CSMBus, uintptr(unsafe.Pointer(&args))); e != 0 {
		return fmt.Errorf("I2C_SMBUS write %#x to register %#x: %w", val, reg, e)
	}
	return nil
}

// NextEvent reads the next w1 notification from c, a Conn joined to group
// 3, and returns it with its payload.
func NextEvent(c *connector.Conn, timeout time.Duration) (w1.Event, []byte, error) {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return w1.Event{}, nil, err
	}
	defer c.SetReadDeadline(time.Time{})
	for {
		msgs, from, err := c.Receive()
		if err != nil {
			return w1.Event{}, nil, err
		}
		for _, m := range msgs {
			if m.ID == w1.ID && from.Kernel() && from.Group == w1.Group {
				e, err := w1.ParseEvent(m)
				return e, m.Data, err
			}
		}
	}
}
