//go:build !linux

package connector

// Agents lists the kernel agents registered with this machine's connector.
// Only Linux has one: elsewhere the error matches ErrNotSupported.
func Agents() ([]Agent, error) { return nil, notSupported("list agents") }
