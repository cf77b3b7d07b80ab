//go:build linux

package connector

import "os"

// Agents lists the kernel agents registered with this machine's connector,
// read from /proc/net/connector, in registration order. The file exists only
// in the initial network namespace: elsewhere the error matches
// fs.ErrNotExist. Anyone may read it.
func Agents() ([]Agent, error) {
	b, err := os.ReadFile(procConnector)
	if err != nil {
		return nil, opErr("list agents", err)
	}
	a, err := parseAgents(b)
	return a, opErr("list agents", err)
}

// AgentTable implements transport.Transport: the kernel's own list.
func (t *sockTransport) AgentTable() ([]byte, error) { return os.ReadFile(procConnector) }
