//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/w1stub"
	"github.com/cnlink/connector/w1"
)

// TestIntegrationTool runs the program's commands against the kernel's w1
// agent and a DS2482 on i2c-stub (the kernel matrix loads the modules of
// testdata/kmatrix-modules; the host has none and skips).
func TestIntegrationTool(t *testing.T) {
	agents, err := connector.Agents()
	registered := err == nil && slices.ContainsFunc(agents, func(a connector.Agent) bool { return a.ID == w1.ID })
	matrix := os.Getenv("KMATRIX") == "1"
	switch {
	case !registered && matrix:
		t.Fatal("w1 agent not registered in the kernel matrix: are the modules of testdata/kmatrix-modules loaded?")
	case !registered:
		t.Skip("w1 agent not registered: runs only in the kernel matrix (.ci/matrix -pkgs ./examples/w1), which loads wire, i2c-stub, i2c-dev and ds2482")
	case os.Geteuid() != 0:
		t.Skip("privilege missing: instantiating the ds2482 bus master through sysfs needs root")
	}
	b, err := w1stub.Setup()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Remove()
	m := fmt.Sprint(uint32(b.Master))
	w1run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var out, errOut bytes.Buffer
		if err := run(ctx, args, &out, &errOut, nil); err != nil {
			t.Fatalf("w1 %s: %v (stderr %q)", strings.Join(args, " "), err, errOut.String())
		}
		t.Logf("$ w1 %s\n%s", strings.Join(args, " "), out.String())
		return out.String()
	}
	if got, want := w1run("masters"), b.Master.String()+"\n"; got != want {
		t.Errorf("masters: %q, want %q", got, want)
	}
	if got, want := w1run("reset", m), b.Master.String()+": presence\n"; got != want {
		t.Errorf("reset: %q, want %q", got, want)
	}
	if err := b.SetPresence(false); err != nil {
		t.Fatal(err)
	}
	if got, want := w1run("-json", "reset", m), fmt.Sprintf(`{"master":%s,"presence":false}`+"\n", m); got != want {
		t.Errorf("reset without presence: %q, want %q", got, want)
	}
	if err := b.SetPresence(true); err != nil {
		t.Fatal(err)
	}
	w1run("search", m)
	if got := w1run("tx", m, "reset", "write", "cc44", "read", "4", "touch", "ff"); got != "2 READ 00000000\n3 TOUCH 00\n" {
		t.Errorf("tx: %q", got)
	}
	var tx struct {
		Target  string `json:"target"`
		Results []struct {
			Index int    `json:"index"`
			Cmd   string `json:"cmd"`
			Data  string `json:"data"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(w1run("-json", "-nobundle", "tx", m, "write", "cc", "read", "2")), &tx); err != nil || len(tx.Results) != 1 || tx.Results[0].Data != "0000" {
		t.Errorf("-json tx: %+v, %v", tx, err)
	}
	id := "01-665544332211"
	w1run("add", m, id)
	if got := w1run("slaves", m); got != id+"\n" {
		t.Errorf("slaves after add: %q", got)
	}
	w1run("tx", id, "write", "33", "read", "8")
	w1run("remove", m, id)
	if got := w1run("-json", "slaves", m); got != fmt.Sprintf(`{"master":%s,"slaves":[]}`+"\n", m) {
		t.Errorf("slaves after remove: %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = run(ctx, []string{"reset", "999"}, &bytes.Buffer{}, &bytes.Buffer{}, nil)
	var e *w1.Error
	if !errors.As(err, &e) || e.Index != -1 {
		t.Errorf("reset of an unknown master: err = %v", err)
	}
	t.Logf("$ w1 reset 999\n%v", err)

	// watch: notifications from group 3 as JSON lines. Nothing tells when
	// watch has joined the group, so the test adds and removes a slave
	// until watch reports it.
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	r, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(wctx, []string{"-json", "watch"}, pw, io.Discard, nil)
		pw.Close()
	}()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	w, err := w1.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	sid, _ := w1.ParseSlaveID(id)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	var line string
	for line == "" {
		select {
		case l := <-lines:
			line = l
		case <-tick.C:
			_ = w.AddSlave(ctx, b.Master, sid)
			_ = w.RemoveSlave(ctx, b.Master, sid)
		case <-deadline:
			t.Fatal("watch printed nothing within 20 s")
		}
	}
	t.Logf("$ w1 -json watch\n%s", line)
	var ev struct {
		Event string `json:"event"`
		Slave string `json:"slave"`
		Seq   uint32 `json:"seq"`
	}
	if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Slave != id || (ev.Event != "slave added" && ev.Event != "slave removed") || ev.Seq == 0 {
		t.Errorf("watch printed %q (%v)", line, err)
	}
	wcancel()
	go func() {
		for range lines {
		}
	}()
	if err := <-done; err != nil {
		t.Errorf("watch ended with %v", err)
	}
}

// TestWatchNoAgent runs where the kernel has no w1 agent (the host): watch
// fails at once with ErrNoAgent, as every other command does, instead of
// printing nothing until interrupted.
func TestWatchNoAgent(t *testing.T) {
	agents, err := connector.Agents()
	switch {
	case err != nil:
		t.Skipf("cannot list the connector's agents (%v): watch cannot tell whether the w1 agent is registered", err)
	case slices.ContainsFunc(agents, func(a connector.Agent) bool { return a.ID == w1.ID }):
		t.Skip("the w1 agent is registered: this test needs a kernel without wire.ko (the host)")
	}
	for _, args := range [][]string{{"watch"}, {"-json", "watch"}, {"-poll", "1s", "watch"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var out bytes.Buffer
		err := run(ctx, args, &out, io.Discard, nil)
		cancel()
		if !errors.Is(err, connector.ErrNoAgent) || out.Len() != 0 {
			t.Errorf("w1 %s: err = %v, output %q; want ErrNoAgent and no output", strings.Join(args, " "), err, out.String())
		}
	}
}
