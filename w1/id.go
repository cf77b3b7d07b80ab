package w1

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// A MasterID is the kernel's number of a bus master: the N of
// /sys/bus/w1/devices/w1_bus_masterN, as LIST_MASTERS reports it.
type MasterID uint32

func (id MasterID) String() string { return "w1_bus_master" + strconv.FormatUint(uint64(id), 10) }

// A SlaveID is a 1-Wire ROM code as the kernel stores it (struct w1_reg_num
// in drivers/w1/w1.h): the family code, the 48-bit serial number in
// little-endian byte order, and the CRC-8 of the first seven bytes.
//
// Its String form is the sysfs name of the slave, "28-0000079e36c0": the
// family and the serial in hex, without the CRC.
type SlaveID [8]byte

// Kernel returns the id as the kernel stores it in messages: struct
// w1_reg_num (drivers/w1/w1.h) is a 64-bit bit field, family in the low 8
// bits, serial in the next 48, CRC in the top 8, so its bytes are in ROM
// order (as SlaveID holds them) on little-endian machines and reversed on
// big-endian ones.
func (id SlaveID) Kernel() [8]byte {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], binary.LittleEndian.Uint64(id[:]))
	return b
}

// SlaveIDFromKernel returns the slave id that b holds as the kernel stores
// it (see SlaveID.Kernel).
func SlaveIDFromKernel(b [8]byte) SlaveID {
	var id SlaveID
	binary.LittleEndian.PutUint64(id[:], binary.NativeEndian.Uint64(b[:]))
	return id
}

// NewSlaveID returns the id of the given family and 48-bit serial, with its
// CRC computed. Bits of serial above 48 are ignored.
func NewSlaveID(family byte, serial uint64) SlaveID {
	var id SlaveID
	id[0] = family
	for i := 0; i < 6; i++ {
		id[1+i] = byte(serial >> (8 * i))
	}
	id[7] = CRC8(id[:7])
	return id
}

// Family returns the family code (0x28 for a DS18B20, 0x2d for a DS2431).
func (id SlaveID) Family() byte { return id[0] }

// Serial returns the 48-bit serial number.
func (id SlaveID) Serial() uint64 {
	var s uint64
	for i := 5; i >= 0; i-- {
		s = s<<8 | uint64(id[1+i])
	}
	return s
}

// CRC returns the CRC byte as stored.
func (id SlaveID) CRC() byte { return id[7] }

// Valid reports whether the stored CRC is the CRC-8 of the first seven
// bytes, as a real device's ROM code always is.
func (id SlaveID) Valid() bool { return CRC8(id[:7]) == id[7] }

// String returns the sysfs name, "ff-ssssssssssss" (family and serial in
// lower-case hex).
func (id SlaveID) String() string {
	return fmt.Sprintf("%02x-%012x", id.Family(), id.Serial())
}

// KernelString returns the form the kernel uses in its log messages,
// "ff.ssssssssssss.cc", which includes the CRC.
func (id SlaveID) KernelString() string {
	return fmt.Sprintf("%02x.%012x.%02x", id.Family(), id.Serial(), id.CRC())
}

// MarshalText implements encoding.TextMarshaler with the sysfs form.
func (id SlaveID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseSlaveID.
func (id *SlaveID) UnmarshalText(b []byte) error {
	v, err := ParseSlaveID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// ErrBadCRC reports a slave id whose CRC byte does not match its other seven
// bytes.
var ErrBadCRC = errors.New("w1: slave id CRC mismatch")

// ParseSlaveID parses a slave id in the sysfs form "28-0000079e36c0" (the
// CRC is computed) or in the kernel's log form "28.0000079e36c0.17" (the
// CRC is checked: a mismatch is an error matching ErrBadCRC). Hex digits may
// be upper or lower case. Both forms name the same slave; see the example.
func ParseSlaveID(s string) (SlaveID, error) {
	var fam, ser, crc string
	hasCRC := false
	if f, rest, ok := strings.Cut(s, "-"); ok {
		fam, ser = f, rest
	} else if parts := strings.Split(s, "."); len(parts) == 3 {
		fam, ser, crc, hasCRC = parts[0], parts[1], parts[2], true
	} else {
		return SlaveID{}, fmt.Errorf("w1: slave id %q: want family-serial (28-0000079e36c0) or family.serial.crc", s)
	}
	if len(fam) != 2 || len(ser) != 12 || (hasCRC && len(crc) != 2) {
		return SlaveID{}, fmt.Errorf("w1: slave id %q: want a 2-digit hex family and a 12-digit hex serial", s)
	}
	f, err1 := strconv.ParseUint(fam, 16, 8)
	sn, err2 := strconv.ParseUint(ser, 16, 48)
	if err1 != nil || err2 != nil {
		return SlaveID{}, fmt.Errorf("w1: slave id %q: family and serial must be hex digits", s)
	}
	id := NewSlaveID(byte(f), sn)
	if hasCRC {
		c, err := strconv.ParseUint(crc, 16, 8)
		if err != nil {
			return SlaveID{}, fmt.Errorf("w1: slave id %q: the CRC must be two hex digits", s)
		}
		if byte(c) != id[7] {
			return SlaveID{}, fmt.Errorf("%w: %q has CRC %02x, its bytes give %02x", ErrBadCRC, s, c, id[7])
		}
	}
	return id, nil
}

// CRC8 returns the Dallas/Maxim 1-Wire CRC-8 of b (polynomial x^8+x^5+x^4+1,
// processed LSB first: reflected 0x8c, initial value 0), which covers ROM
// codes and scratchpads. The CRC of data followed by its CRC is 0.
func CRC8(b []byte) byte {
	var crc byte
	for _, v := range b {
		crc = crc8Table[crc^v]
	}
	return crc
}

var crc8Table = func() (t [256]byte) {
	for i := range t {
		c := byte(i)
		for range 8 {
			if c&1 != 0 {
				c = c>>1 ^ 0x8c
			} else {
				c >>= 1
			}
		}
		t[i] = c
	}
	return t
}()
