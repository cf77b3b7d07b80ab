package testutil

import (
	"errors"
	"testing"
)

func TestRepeatedWord(t *testing.T) {
	for s, want := range map[string]string{
		"connector: dial: Config.NetNS (fd 9) is not open (setns: setns: bad file descriptor)": "setns",
		"connector: receive: receive buffer overrun":                                           "receive",
		"connector: call: no reply from port 3 to 256:1 (seq 0, ack 0)":                        "",
		"nothing receives id 3:1 (registered: cntest 1:1)":                                     "",
		"invalid connector group: group 0":                                                     "group",
		"":                                                                                     "",
	} {
		if got := RepeatedWord(s); got != want {
			t.Errorf("RepeatedWord(%q) = %q, want %q", s, got, want)
		}
	}
}

func TestCheckErrorText(t *testing.T) {
	for _, tc := range []struct {
		err  error
		min  int
		fail bool
	}{
		{errors.New("connector: send: message too large"), 1, false},
		{errors.New("message too large"), 0, false},
		{errors.New("message too large"), 1, true},
		{errors.New("proc: listen: connector: dial: refused"), 0, true},
		{errors.New("connector: receive: receive"), 0, true},
		{nil, 0, true},
	} {
		ft := &recorder{}
		CheckErrorText(ft, "op", tc.err, tc.min, "connector: ", "proc: ")
		if ft.failed != tc.fail {
			t.Errorf("CheckErrorText(%v, min %d): failed %v, want %v", tc.err, tc.min, ft.failed, tc.fail)
		}
	}
}

type recorder struct{ failed bool }

func (r *recorder) Helper()               {}
func (r *recorder) Errorf(string, ...any) { r.failed = true }
