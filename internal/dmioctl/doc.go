// Package dmioctl is a small device-mapper client for the tests that drive
// dm-log-userspace in the kernel matrix: the ioctls of
// include/uapi/linux/dm-ioctl.h (interface version 4), enough to create
// devices, load a table, suspend, resume, read the status and remove them,
// with no dmsetup or libdevmapper in the guest. Linux only.
package dmioctl
