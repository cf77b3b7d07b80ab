// Package w1stub sets up a 1-Wire bus master for the tests that run in the
// kernel matrix: a DS2482 emulated on i2c-stub, as agents.md 7.2 describes.
// The matrix loads the modules (wire, i2c-stub chip_addr=0x18, i2c-dev,
// ds2482) from the package's testdata/kmatrix-modules; Setup preloads the
// stub's registers through i2c-dev and instantiates the ds2482 through
// sysfs, after which the kernel registers w1_bus_masterN and multicasts
// MASTER_ADD on group 3. It needs root.
//
// The stub has no 1-Wire device on it: reads return what its registers
// hold (zeros), a search returns ids the kernel does not register, and a
// reset reports presence as register 0xb4 says (SetPresence).
package w1stub
