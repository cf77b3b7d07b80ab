package main

import (
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/internal/testutil"
)

// TestAllGroupsUnprivileged: the default -g all, run without
// CAP_NET_ADMIN (as uid 65534: a helper when the test runs as root), does
// not fail on group 2: it joins the groups the kernel lets it join and
// warns, naming the skipped groups and CAP_NET_ADMIN. Since Linux 6.6 an
// unprivileged socket may join the odd-numbered groups only (cn_bind);
// before, none, and then cndump fails saying so.
func TestAllGroupsUnprivileged(t *testing.T) {
	cmd := testutil.HelperCommand(t, program, "-g", "all")
	if os.Geteuid() == 0 {
		testutil.AsNobody(cmd)
	} else if c, err := connector.Dial(&connector.Config{Groups: []connector.Group{2}}); err == nil {
		c.Close()
		t.Skip("this unprivileged test process may join group 2 (CAP_NET_ADMIN), so it cannot show the fallback")
	}
	p := testutil.Start(t, cmd)
	first := p.Stderr.FindPrefix(t, timeout, "cndump: ")
	if strings.Contains(first, "could not join any group") {
		// Before Linux 6.6: every group needs CAP_NET_ADMIN.
		if !strings.Contains(first, "CAP_NET_ADMIN") {
			t.Errorf("%q does not name CAP_NET_ADMIN", first)
		}
		if code := p.Wait(t, timeout); code == 0 {
			t.Error("cndump joined no group and exited 0")
		}
		return
	}
	var odd, even []connector.Group
	for g := connector.Group(1); g <= 32; g++ {
		if g%2 == 1 {
			odd = append(odd, g)
		} else {
			even = append(even, g)
		}
	}
	if want := "cndump: could not join groups " + formatGroups(even) + ": "; !strings.HasPrefix(first, want) || !strings.Contains(first, "CAP_NET_ADMIN") {
		t.Errorf("first line %q; want the skipped groups (%q) and CAP_NET_ADMIN", first, want)
	}
	line := p.Stderr.FindPrefix(t, timeout, "cndump: port ")
	if want := "listening on groups " + formatGroups(odd); !strings.HasSuffix(line, want) {
		t.Errorf("%q; want it to end with %q", line, want)
	}
	p.Signal(t, syscall.SIGTERM)
	if code := p.Wait(t, timeout); code != 0 {
		t.Errorf("cndump exited %d after SIGTERM, want 0", code)
	}
}
