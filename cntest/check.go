package cntest

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/cnlink/connector"
)

// CheckRequest returns a HandlerFunc that reports an error through tb for
// every request that differs from want, then calls next (if not nil) and
// returns its replies. ID, Flags and Data are always compared; Seq and Ack
// only where want sets them (not 0), because protocols often pick them at
// random. Register it with [Kernel.Handle] for want.ID.
func CheckRequest(tb testing.TB, want connector.Message, next HandlerFunc) HandlerFunc {
	return func(req connector.Message, from connector.Sender) []Reply {
		if diff := diffMessage(want, req); diff != "" {
			tb.Errorf("cntest: unexpected request from %v:\n%s", from, diff)
		}
		if next == nil {
			return nil
		}
		return next(req, from)
	}
}

// diffMessage describes how got differs from want, or returns "".
func diffMessage(want, got connector.Message) string {
	var d []string
	if want.ID != got.ID {
		d = append(d, fmt.Sprintf("id: want %d:%d, got %d:%d", want.ID.Idx, want.ID.Val, got.ID.Idx, got.ID.Val))
	}
	if want.Seq != 0 && want.Seq != got.Seq {
		d = append(d, fmt.Sprintf("seq: want %d, got %d", want.Seq, got.Seq))
	}
	if want.Ack != 0 && want.Ack != got.Ack {
		d = append(d, fmt.Sprintf("ack: want %d, got %d", want.Ack, got.Ack))
	}
	if want.Flags != got.Flags {
		d = append(d, fmt.Sprintf("flags: want %#x, got %#x", want.Flags, got.Flags))
	}
	if !bytes.Equal(want.Data, got.Data) {
		d = append(d, fmt.Sprintf("data: want %d bytes % x, got %d bytes % x", len(want.Data), want.Data, len(got.Data), got.Data))
	}
	return strings.Join(d, "\n")
}
