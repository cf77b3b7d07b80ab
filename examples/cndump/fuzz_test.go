//go:build linux

package main

import (
	"testing"

	"github.com/cnlink/connector"
)

func FuzzParseGroups(f *testing.F) {
	for _, s := range []string{"all", "1", "1,3,20-23", "32-1", "0", "5-", ",", "1-32,1-32"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		gs, all, err := parseGroups(s)
		if err != nil {
			return
		}
		if len(gs) == 0 && !all {
			t.Fatalf("parseGroups(%q) accepted no groups", s)
		}
		seen := map[connector.Group]bool{}
		for _, g := range gs {
			if !g.Valid() || seen[g] {
				t.Fatalf("parseGroups(%q) = %v: invalid or repeated group %d", s, gs, g)
			}
			seen[g] = true
		}
		// The compact form parses back to the same set.
		again, _, err := parseGroups(formatGroups(gs))
		if err != nil || len(again) != len(gs) {
			t.Fatalf("formatGroups(%v) = %q does not parse back: %v %v", gs, formatGroups(gs), again, err)
		}
	})
}

func FuzzParseID(f *testing.F) {
	for _, s := range []string{"proc", "w1", "14:0x456", "14:*", "14", "0xffffffff:0", ":", "1:2:3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var fl idFilter
		if err := fl.Set(s); err != nil {
			return
		}
		if len(fl) != 1 {
			t.Fatalf("Set(%q) added %d entries", s, len(fl))
		}
		m := fl[0]
		if !fl.match(connector.CBID{Idx: m.idx, Val: m.val}) {
			t.Errorf("-id %q does not match its own id %d:%d", s, m.idx, m.val)
		}
	})
}

func FuzzHexDump(f *testing.F) {
	f.Add([]byte("hello cndump, a payload longer than sixteen bytes"))
	f.Add([]byte{0, 1, 2, 0x7f, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		out := appendHexDump(nil, b, "  ")
		lines := 0
		for _, c := range out {
			if c == '\n' {
				lines++
			}
		}
		if want := (len(b) + 15) / 16; lines != want {
			t.Errorf("%d bytes dumped in %d lines, want %d", len(b), lines, want)
		}
	})
}
