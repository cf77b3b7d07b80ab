//go:build linux

package main

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRecvmmsgBatchLayout reads a batch of datagrams of different lengths
// with the raw loop's recvmmsg and checks every entry: with a mmsghdr of the
// wrong size (as it was on 32-bit systems) the kernel writes the entries
// after the first where Go does not read them. It needs no privilege (a
// datagram socket pair), so it runs on every GOARCH that can execute here
// (GOARCH=386 go test on amd64).
func TestRecvmmsgBatchLayout(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])

	var sent [][]byte
	for i := range 5 {
		// Netlink-framed datagrams, as the connector sends them, with
		// payloads of 4, 40, 76, ... bytes so that every length differs.
		msg := nlmsg(bytes.Repeat([]byte{byte('a' + i)}, 4+36*i), 0)
		if err := unix.Send(fds[0], msg, 0); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		sent = append(sent, msg)
	}
	var r rawRecv
	r.setup(fds[1], 8, 512)
	n, e := r.recvmmsg(uintptr(fds[1]), unix.MSG_DONTWAIT)
	if e != 0 {
		t.Fatalf("recvmmsg: %v", e)
	}
	if n != len(sent) {
		t.Fatalf("recvmmsg returned %d datagrams, want %d", n, len(sent))
	}
	for i, want := range sent {
		if got := int(r.hdrs[i].Len); got != len(want) {
			t.Errorf("entry %d: msg_len %d, want %d", i, got, len(want))
			continue
		}
		p, ok := r.payload(i)
		if !ok || !bytes.Equal(p, want[nlmsgHdrLen:]) {
			t.Errorf("entry %d: payload %q (ok %v), want %q", i, p, ok, want[nlmsgHdrLen:])
		}
	}
}
