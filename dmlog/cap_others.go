//go:build !linux

package dmlog

// checkSysAdmin: there is no dm-log-userspace outside Linux; a Server runs
// there only against fakes.
func checkSysAdmin() error { return nil }
