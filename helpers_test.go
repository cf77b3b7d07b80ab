package connector_test

// Helpers shared by the tests on every system.

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// awaitErr waits up to d for the error that a call running on another
// goroutine sends on done, fails the test unless it matches target, and
// returns it. what names the call, and the event that should end it.
func awaitErr(t testing.TB, done <-chan error, d time.Duration, target error, what string) error {
	t.Helper()
	select {
	case err := <-done:
		if !errors.Is(err, target) {
			t.Errorf("%s: %v, want %v", what, err, target)
		}
		return err
	case <-time.After(d):
		t.Fatalf("%s: still running after %v", what, d)
		return nil
	}
}

// errorsIsAll fails the test unless err matches every target.
func errorsIsAll(t testing.TB, err error, targets ...error) {
	t.Helper()
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Errorf("error %q (%T) does not match %v", err, err, target)
		}
	}
}

// mustContain fails the test unless err's text contains every part.
func mustContain(t testing.TB, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("got no error, want one mentioning %q", parts)
		return
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not mention %q", err, p)
		}
	}
}
