package connector_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/testutil"
)

// TestNilArguments: every entry point of the package that returns an error
// returns one for a nil argument, naming it, in the package's one error
// shape, instead of panicking (doc.go, "Nil arguments").
func TestNilArguments(t *testing.T) {
	k := cntest.New(nil)
	c := dialFake(t, k, nil)
	var nilCtx context.Context // a typed nil would not be nil
	msg := connector.Message{ID: idA, Seq: 1}
	to := connector.ToPort(c.PortID())
	keep := func(connector.Message, connector.Sender) bool { return false }
	tests := []struct {
		name, names string
		f           func() error
	}{
		{"Call(nil ctx)", "ctx is nil", func() error {
			_, _, err := connector.Call(nilCtx, c, msg, to, connector.MatchSeq)
			return err
		}},
		{"Exchange(nil ctx)", "ctx is nil", func() error {
			return connector.Exchange(nilCtx, c, msg, to, connector.MatchSeq, keep)
		}},
		{"Call(nil Conn)", "nil or zero-value *Conn", func() error {
			_, _, err := connector.Call(context.Background(), nil, msg, to, connector.MatchSeq)
			return err
		}},
		{"Call(nil Match)", "nil Match", func() error {
			_, _, err := connector.Call(context.Background(), c, msg, to, nil)
			return err
		}},
		{"Exchange(nil fn)", "nil reply function", func() error {
			return connector.Exchange(context.Background(), c, msg, to, connector.MatchSeq, nil)
		}},
		{"Serve(nil ctx)", "ctx is nil", func() error {
			return connector.NewMux().Serve(nilCtx, c, nil)
		}},
		{"Serve(nil Conn)", "nil or zero-value *Conn", func() error {
			return connector.NewMux().Serve(context.Background(), nil, nil)
		}},
		{"nil Mux.Serve", "nil *Mux", func() error {
			var mx *connector.Mux
			return mx.Serve(context.Background(), c, nil)
		}},
		{"NewQueue(nil)", "nil handler", func() error {
			_, err := connector.NewQueue(nil, 1, nil)
			return err
		}},
		{"Request{}.Reply", "no Conn", func() error {
			return connector.Request{}.Reply(msg)
		}},
	}
	for _, tt := range tests {
		err := func() (err error) {
			defer func() {
				if v := recover(); v != nil {
					err = nil
					t.Errorf("%s panicked: %v", tt.name, v)
				}
			}()
			return tt.f()
		}()
		if err == nil {
			t.Errorf("%s: no error", tt.name)
			continue
		}
		if !strings.Contains(err.Error(), tt.names) {
			t.Errorf("%s: %q does not say %q", tt.name, err, tt.names)
		}
		var oe *connector.OpError
		if !errors.As(err, &oe) {
			t.Errorf("%s: %v is not an *OpError", tt.name, err)
		}
		testutil.CheckErrorShape(t, tt.name, err, "connector")
	}
}

// TestZeroMuxServe: a zero Mux (not made by NewMux) serves: with no
// routes, what it reads is counted as unrouted, not a panic.
func TestZeroMuxServe(t *testing.T) {
	k := cntest.New(nil)
	c, tx := dialFake(t, k, nil), dialFake(t, k, nil)
	var mx connector.Mux
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- mx.Serve(ctx, c, nil) }()
	if err := tx.SendTo(c.PortID(), connector.Message{ID: idA}); err != nil {
		t.Fatal(err)
	}
	if !testutil.WaitFor(fakeWait, func() bool { return mx.Stats().Unrouted == 1 }) {
		t.Fatal("timed out waiting for the zero Mux to count the message unrouted")
	}
	cancel()
	awaitErr(t, done, fakeWait, context.Canceled, "Serve of a zero Mux")
}

// TestUnopenedConn: every method of a nil or zero-value *Conn (one that
// Dial did not open) returns an error matching os.ErrInvalid that says so,
// or a zero value, and never panics; a Reader from its NewReader fails on
// Next the same way. The methods are found by reflection, so a method added
// later is checked too.
func TestUnopenedConn(t *testing.T) {
	for name, c := range map[string]*connector.Conn{"nil": nil, "zero": {}} {
		v := reflect.ValueOf(c)
		for i := range v.NumMethod() {
			m := v.Type().Method(i)
			what := fmt.Sprintf("%s *Conn's %s", name, m.Name)
			args := make([]reflect.Value, m.Type.NumIn()-1)
			for j := range args {
				at := m.Type.In(j + 1)
				args[j] = reflect.New(at).Elem()
				if at.Kind() == reflect.Uint32 {
					args[j].SetUint(1) // a valid port id or group, so that only the Conn is wrong
				}
			}
			out, ok := callNoPanic(t, what, func() []reflect.Value { return v.Method(i).Call(args) })
			if !ok {
				continue
			}
			if m.Name == "NewReader" {
				r := out[0].Interface().(*connector.Reader)
				var err error
				if _, ok := callNoPanic(t, what+"().Next", func() []reflect.Value { _, _, err = r.Next(); return nil }); ok {
					checkUnopened(t, what+"().Next", err)
				}
				callNoPanic(t, what+"().Release", func() []reflect.Value { r.Release(); return nil })
				continue
			}
			last := m.Type.Out(m.Type.NumOut() - 1)
			if last != reflect.TypeFor[error]() {
				continue // PortID, Config, Stats: zero values
			}
			err, _ := out[len(out)-1].Interface().(error)
			checkUnopened(t, what, err)
		}
	}
}

func checkUnopened(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, os.ErrInvalid) || !strings.Contains(fmt.Sprint(err), "zero-value *Conn") {
		t.Errorf("%s: %v, want an error matching os.ErrInvalid that says the Conn is not open", what, err)
		return
	}
	testutil.CheckErrorShape(t, what, err, "connector")
}

// callNoPanic runs f and fails t if it panics.
func callNoPanic(t *testing.T, what string, f func() []reflect.Value) (out []reflect.Value, ok bool) {
	t.Helper()
	defer func() {
		if v := recover(); v != nil {
			t.Errorf("%s panicked: %v", what, v)
			ok = false
		}
	}()
	return f(), true
}
