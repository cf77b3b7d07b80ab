package testutil

import (
	"strings"
	"testing"
	"unicode"
)

// RepeatedWord returns the first word of s that directly follows itself
// ("setns: setns:", "receive: receive"), case and surrounding punctuation
// ignored, or "". Words are split at spaces, so an id such as 1:1 stays one
// word.
func RepeatedWord(s string) string {
	w := strings.Fields(strings.ToLower(s))
	n := 0
	for _, f := range w {
		if f = strings.TrimFunc(f, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }); f != "" {
			w[n] = f
			n++
		}
	}
	for i := 1; i < n; i++ {
		if w[i] == w[i-1] {
			return w[i]
		}
	}
	return ""
}

// An Errorer is the part of testing.TB that CheckErrorText uses.
type Errorer interface {
	Helper()
	Errorf(format string, args ...any)
}

var _ Errorer = testing.TB(nil)

// CheckErrorText fails t unless err is an error whose text says each thing
// once: no word repeated (RepeatedWord), and between minPrefixes and one of
// the package prefixes given ("connector: ", "proc: ") in all. what names the
// operation in the failure.
func CheckErrorText(t Errorer, what string, err error, minPrefixes int, prefixes ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error", what)
		return
	}
	s := err.Error()
	if w := RepeatedWord(s); w != "" {
		t.Errorf("%s: %q repeats %q", what, s, w)
	}
	n := 0
	for _, p := range prefixes {
		n += strings.Count(s, p)
	}
	if n < minPrefixes || n > 1 {
		t.Errorf("%s: %q has %d of the prefixes %q, want %d to 1", what, s, n, prefixes, minPrefixes)
	}
}

// CheckErrorShape fails t unless err's text has the one shape of a
// package's errors, "pkg: op: detail": it starts with pkg and ": ", an
// operation and ": " follow, and it passes CheckErrorText with pkg's and
// package connector's prefixes (so no second prefix hides inside it).
func CheckErrorShape(t Errorer, what string, err error, pkg string) {
	t.Helper()
	if pkg == "connector" {
		CheckErrorText(t, what, err, 1, "connector: ")
	} else {
		CheckErrorText(t, what, err, 1, pkg+": ", "connector: ")
	}
	if err == nil {
		return
	}
	rest, ok := strings.CutPrefix(err.Error(), pkg+": ")
	if op, _, found := strings.Cut(rest, ": "); !ok || !found || op == "" {
		t.Errorf("%s: %q does not have the %q shape", what, err.Error(), pkg+": op: detail")
	}
}
