package connector

import (
	"fmt"
	"strconv"
)

// A SenderPolicy says which senders a Conn accepts messages from. Messages
// from other senders are dropped and counted in [Stats.Foreign], never
// returned. The sender is read from the datagram's source address, which
// the kernel fills in: userspace cannot forge port 0.
type SenderPolicy int

const (
	// SendersDefault accepts only the kernel (port 0) on the groups
	// reserved for kernel agents (1 to 10, see [Group.Kernel]), where a
	// userspace sender is a spoof of the agent, and anyone on other groups
	// and in unicasts.
	SendersDefault SenderPolicy = iota
	// SendersKernelOnly accepts only the kernel, on every group and in
	// unicasts.
	SendersKernelOnly
	// SendersAny accepts every sender, also userspace senders on the
	// kernel agents' groups.
	SendersAny
)

// Accepts reports whether the policy accepts a message from s.
func (p SenderPolicy) Accepts(s Sender) bool {
	switch {
	case s.Port == 0, p == SendersAny:
		return true
	case p == SendersKernelOnly:
		return false
	}
	return !s.Group.Kernel()
}

func (p SenderPolicy) String() string {
	switch p {
	case SendersDefault:
		return "SendersDefault"
	case SendersKernelOnly:
		return "SendersKernelOnly"
	case SendersAny:
		return "SendersAny"
	}
	return "SenderPolicy(" + strconv.Itoa(int(p)) + ")"
}

func (p SenderPolicy) check() error {
	if p < SendersDefault || p > SendersAny {
		return fmt.Errorf("%w: Config.Senders is %v; use SendersDefault, SendersKernelOnly or SendersAny", ErrInvalidConfig, p)
	}
	return nil
}

// A Sender is the source address of a received message.
type Sender struct {
	// Port is the sender's netlink port id: 0 for the kernel, otherwise a
	// userspace socket. Userspace cannot bind port 0, so Port 0 is proof
	// that the kernel sent the message.
	Port uint32
	// Group is the group the message was multicast on, or 0 for a unicast.
	Group Group
}

// Kernel reports whether the kernel sent the message.
func (s Sender) Kernel() bool { return s.Port == 0 }

func (s Sender) String() string {
	who := "kernel"
	if s.Port != 0 {
		who = fmt.Sprintf("port %d", s.Port)
	}
	if s.Group != 0 {
		return fmt.Sprintf("%s on group %d", who, s.Group)
	}
	return who
}
