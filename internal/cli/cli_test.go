package cli

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestExit(t *testing.T) {
	fs := flag.NewFlagSet("prog", flag.ContinueOnError)
	var flagOut bytes.Buffer
	fs.SetOutput(&flagOut)
	fs.Int("n", 0, "a number")
	parseErr := Parse(fs, []string{"-bogus"})
	for _, tc := range []struct {
		err  error
		code int
		out  string
	}{
		{nil, 0, ""},
		{flag.ErrHelp, 0, ""},
		{Parse(fs, []string{"-h"}), 0, ""},
		{errors.New("it broke"), 1, "prog: it broke\n"},
		{errors.New("prog: it broke"), 1, "prog: it broke\n"},
		{Usagef("-n %d: too large", 9), 2, "prog: -n 9: too large\n"},
		{parseErr, 2, ""}, // the flag package printed it
	} {
		var out bytes.Buffer
		if code := Exit(&out, "prog", tc.err); code != tc.code || out.String() != tc.out {
			t.Errorf("Exit(%v) = %d, printed %q; want %d, %q", tc.err, code, out.String(), tc.code, tc.out)
		}
	}
	if !strings.Contains(flagOut.String(), "-bogus") {
		t.Errorf("the flag package did not print the bad flag: %q", flagOut.String())
	}
	if !errors.As(parseErr, new(UsageError)) {
		t.Errorf("Parse error %v is not a UsageError", parseErr)
	}
	if err := Parse(flag.NewFlagSet("p", flag.ContinueOnError), nil); err != nil {
		t.Errorf("Parse of nothing: %v", err)
	}
}

func TestCount(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want string
	}{{0, "0 messages"}, {1, "1 message"}, {2, "2 messages"}, {-1, "-1 messages"}} {
		if got := Count(tc.n, "message", "messages"); got != tc.want {
			t.Errorf("Count(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
	if got := Count(uint64(1), "reply", "replies"); got != "1 reply" {
		t.Errorf("Count(uint64(1)) = %q", got)
	}
}
