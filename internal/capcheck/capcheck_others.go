//go:build !linux

// Package capcheck tells whether the process may expect a kernel agent to
// take its replies; outside Linux there is no such agent, only fakes, whose
// agents RequireAgent checks as on Linux.
package capcheck

// SysAdmin reports true: there is no kernel agent to refuse the process,
// only fakes.
func SysAdmin() (bool, error) { return true, nil }
