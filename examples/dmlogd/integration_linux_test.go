package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnlink/connector/internal/dmioctl"
	"github.com/cnlink/connector/internal/testutil"
)

// TestIntegrationDmlogd runs the program as the log server of a real mirror
// on two dm-zero legs (kernel matrix only): the mirror loads, takes a write
// and is removed, and -json traces every request with errno 0.
func TestIntegrationDmlogd(t *testing.T) {
	testutil.RequireDMLog(t, "./examples/dmlogd")
	ctl, err := dmioctl.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()

	p := testutil.StartHelper(t, program, "-json")
	p.Stderr.FindPrefix(t, 20*time.Second, "dmlogd: serving")

	pfx := fmt.Sprintf("dmlogd-%d", os.Getpid())
	var legs []string
	for i := range 2 {
		name := fmt.Sprintf("%s-z%d", pfx, i)
		dev, err := ctl.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		defer ctl.Remove(name)
		if err := ctl.Load(name, 0, 8192, "zero", ""); err != nil {
			t.Fatal(err)
		}
		if err := ctl.Resume(name); err != nil {
			t.Fatal(err)
		}
		legs = append(legs, dmioctl.DevString(dev))
	}
	name := pfx + "-m"
	dev, err := ctl.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	uuid := pfx + "-log"
	if err := ctl.Load(name, 0, 8192, "mirror", fmt.Sprintf("userspace 4 %s core 1024 nosync 2 %s 0 %s 0", uuid, legs[0], legs[1])); err != nil {
		ctl.Remove(name)
		t.Fatalf("loading the mirror: %v\nstderr:\n%s", err, p.Stderr)
	}
	if err := ctl.Resume(name); err != nil {
		t.Fatal(err)
	}
	if _, err := dmioctl.DirectIO(t.TempDir(), dev, 4096*3, true, 0x42); err != nil {
		t.Errorf("writing through the mirror: %v", err)
	}
	// The region is cleared after the write completes: wait for it, so
	// that no request is in flight when the mirror goes.
	p.Stdout.Find(t, 10*time.Second, "CLEAR_REGION", func(l string) bool { return strings.Contains(l, `"type":"CLEAR_REGION"`) })
	if err := ctl.Remove(name); err != nil {
		t.Fatal(err)
	}
	p.Stdout.Find(t, 5*time.Second, "DTR", func(l string) bool { return strings.Contains(l, `"type":"DTR"`) })
	p.Signal(t, syscall.SIGTERM)
	if code := p.Wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit status %d\nstderr:\n%s", code, p.Stderr)
	}
	seen := map[string]bool{}
	for _, l := range p.Stdout.All() {
		var r traceRecord
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("stdout line %q: %v", l, err)
		}
		if r.UUID != uuid || r.Errno != 0 || r.Error != "" {
			t.Errorf("trace %+v: want uuid %q and no error", r, uuid)
		}
		seen[r.Type] = true
	}
	for _, want := range []string{"CTR", "GET_REGION_SIZE", "RESUME", "MARK_REGION", "FLUSH", "CLEAR_REGION", "PRESUSPEND", "POSTSUSPEND", "DTR"} {
		if !seen[want] {
			t.Errorf("no %s in the trace:\n%s", want, p.Stdout)
		}
	}
	if !strings.Contains(p.Stderr.String(), " 0 errors") {
		t.Errorf("summary: %s", p.Stderr)
	}
}
