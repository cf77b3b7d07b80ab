package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/cli"
	"github.com/cnlink/connector/w1"
	"github.com/cnlink/connector/w1/w1test"
)

// fakeDial returns a dialer of w1 Conns on a fake kernel with a fake w1
// agent.
func fakeDial(t *testing.T) (*w1test.Agent, dialer) {
	k := cntest.New(nil)
	a := w1test.New(k)
	return a, func(cfg *w1.Config) (*w1.Conn, error) {
		c, err := k.Dial(nil)
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { c.Close() })
		return w1.NewConn(c, cfg)
	}
}

func runFake(t *testing.T, dial dialer, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, args, &out, &errOut, dial)
	return out.String(), err
}

func TestCommands(t *testing.T) {
	a, dial := fakeDial(t)
	m := a.AddMaster()
	s := w1.NewSlaveID(0x28, 0x79e36c0)
	a.AttachDevice(m, s)
	a.QueueRead(m, []byte{0xde, 0xad, 0xbe, 0xef})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"masters"}, "w1_bus_master1\n"},
		{[]string{"-json", "masters"}, `{"masters":[1]}` + "\n"},
		{[]string{"slaves", "1"}, ""},
		{[]string{"search", "w1_bus_master1"}, "28-0000079e36c0\n"},
		{[]string{"-json", "slaves", "1"}, `{"master":1,"slaves":["28-0000079e36c0"]}` + "\n"},
		{[]string{"reset", "1"}, "w1_bus_master1: presence\n"},
		{[]string{"-nobundle", "tx", "1", "reset", "write", "cc44", "read", "2", "touch", "ffff"}, "2 READ dead\n3 TOUCH beef\n"},
		{[]string{"-json", "tx", "28-0000079e36c0", "write", "be", "read", "1"}, `{"target":"28-0000079e36c0","results":[{"index":1,"cmd":"READ","data":"00"}]}` + "\n"},
		{[]string{"tx", "1", "write", "cc"}, "ok\n"},
		{[]string{"remove", "1", "28-0000079e36c0"}, "28-0000079e36c0 removed on w1_bus_master1\n"},
		{[]string{"-json", "add", "1", "28.0000079e36c0.17"}, `{"master":1,"slave":"28-0000079e36c0","op":"add"}` + "\n"},
	} {
		got, err := runFake(t, dial, tc.args...)
		if err != nil || got != tc.want {
			t.Errorf("w1 %s = %q, %v; want %q", strings.Join(tc.args, " "), got, err, tc.want)
		}
	}
	a.SetPresence(m, false)
	if got, err := runFake(t, dial, "-json", "reset", "1"); err != nil || got != `{"master":1,"presence":false}`+"\n" {
		t.Errorf("reset without presence = %q, %v", got, err)
	}
}

// TestFlagsAfterCommand: flags may come before the command or right after
// it, as with bus, with the same result.
func TestFlagsAfterCommand(t *testing.T) {
	a, dial := fakeDial(t)
	a.AddMaster()
	before, err := runFake(t, dial, "-json", "masters")
	if err != nil {
		t.Fatal(err)
	}
	after, err := runFake(t, dial, "masters", "-json")
	if err != nil || after != before || !strings.HasPrefix(after, "{") {
		t.Errorf("w1 masters -json: %q, %v; want %q as from w1 -json masters", after, err, before)
	}
}

// TestUnknownCommand: the message names the command at fault and lists the
// real ones, without the whole usage in front of it.
func TestUnknownCommand(t *testing.T) {
	var errOut bytes.Buffer
	err := run(context.Background(), []string{"bogus"}, io.Discard, &errOut, nil)
	if !errors.As(err, new(cli.UsageError)) || !strings.Contains(err.Error(), `"bogus"`) || !strings.Contains(err.Error(), "watch") {
		t.Errorf("w1 bogus: %v, want a usage error naming bogus and the commands", err)
	}
	if errOut.Len() != 0 {
		t.Errorf("w1 bogus printed %q before its error", errOut.String())
	}
}

func TestErrors(t *testing.T) {
	a, dial := fakeDial(t)
	a.AddMaster()
	for _, args := range [][]string{
		{}, {"frobnicate"}, {"masters", "x"}, {"slaves"}, {"slaves", "m"}, {"tx", "1"},
		{"tx", "1", "write"}, {"tx", "1", "write", "zz"}, {"tx", "1", "read", "0"}, {"tx", "1", "jump"},
		{"add", "1", "28-00"}, {"-timeout", "0", "masters"}, {"-bogus"},
	} {
		if _, err := runFake(t, dial, args...); !errors.As(err, new(cli.UsageError)) {
			t.Errorf("w1 %q: err = %v, want a usage error", args, err)
		}
	}
	// A flag's error names it; -poll is watch's only.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-timeout", "-1s", "masters"}, "-timeout"},
		{[]string{"-poll", "-1s", "watch"}, "-poll -1s"},
		{[]string{"-poll", "1s", "masters"}, "-poll"},
		{[]string{"-bogus", "masters"}, "-bogus"},
		{[]string{"watch", "-poll", "-1s"}, "-poll -1s"},
		{[]string{"masters", "-poll", "1s"}, "-poll"},
		{[]string{"bogus"}, `"bogus"`},
	} {
		if _, err := runFake(t, dial, tc.args...); !errors.As(err, new(cli.UsageError)) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("w1 %q: err = %v, want a usage error naming %q", tc.args, err, tc.want)
		}
	}
	if _, err := runFake(t, dial, "reset", "7"); err == nil || !strings.Contains(err.Error(), "ENODEV") {
		t.Errorf("unknown master: err = %v", err)
	}
	a.Unregister()
	if _, err := runFake(t, dial, "masters"); !errors.Is(err, connector.ErrNoAgent) {
		t.Errorf("no agent: err = %v", err)
	}
}

func TestWatchPoll(t *testing.T) {
	a, dial := fakeDial(t)
	a.AddMaster()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-json", "-poll", "5ms", "watch"}, w, io.Discard, dial)
		w.Close()
	}()
	dec := json.NewDecoder(r)
	var ev struct {
		Event  string `json:"event"`
		Master int    `json:"master"`
	}
	if err := dec.Decode(&ev); err != nil || ev.Event != "master added" || ev.Master != 1 {
		t.Fatalf("first event %+v, %v", ev, err)
	}
	a.AddMaster()
	if err := dec.Decode(&ev); err != nil || ev.Event != "master added" || ev.Master != 2 {
		t.Fatalf("second event %+v, %v", ev, err)
	}
	cancel()
	go io.Copy(io.Discard, r)
	if err := <-done; err != nil {
		t.Errorf("watch ended with %v", err)
	}
}
