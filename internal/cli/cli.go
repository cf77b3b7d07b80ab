// Package cli holds what the example programs share about their command
// lines: usage errors, flag parsing and exit statuses (0 success, 1
// failure, 2 bad usage).
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// A UsageError is a bad command line; Exit turns it into status 2. Its text
// names what was wrong, the flag where a flag was.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e UsageError) Unwrap() error { return e.Err }

// Usage returns err as a UsageError.
func Usage(err error) error { return UsageError{err} }

// Usagef returns a UsageError with a formatted text, as fmt.Errorf.
func Usagef(format string, args ...any) error { return UsageError{fmt.Errorf(format, args...)} }

// printed marks an error the flag package has already printed, with the
// usage.
type printed struct{ error }

func (e printed) Unwrap() error { return e.error }

// Parse parses args with fs, which must use flag.ContinueOnError. It
// returns flag.ErrHelp for -h, and any other error as a UsageError that
// Exit does not print again (the flag package has printed it).
func Parse(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return UsageError{printed{err}}
}

// Exit returns the exit status for a program's error: 0 for nil or
// flag.ErrHelp, 2 for a UsageError, 1 for anything else. It prints the
// error to stderr first, prefixed with the program's name unless the text
// already starts with it, and unless the flag package has printed it.
func Exit(stderr io.Writer, prog string, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if !errors.As(err, new(printed)) {
		s := err.Error()
		if !strings.HasPrefix(s, prog+": ") {
			s = prog + ": " + s
		}
		fmt.Fprintln(stderr, s)
	}
	if errors.As(err, new(UsageError)) {
		return 2
	}
	return 1
}

// Count returns n and the noun, singular for 1 and plural otherwise:
// Count(1, "message", "messages") is "1 message", Count(0, ...) "0 messages".
func Count[N ~int | ~int64 | ~uint64 | ~uint32 | ~uint](n N, singular, plural string) string {
	if n == 1 {
		return "1 " + singular
	}
	return fmt.Sprintf("%d %s", n, plural)
}
